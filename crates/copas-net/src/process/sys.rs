//! The raw calls of child-process support: `pidfd_open` (Linux), a read into a buffer's
//! spare capacity, and `poll` for the reaper thread.
//!
//! Invariant: no function here takes ownership of a descriptor it is given; the only
//! descriptor created here (`pidfd_open`'s) is wrapped in an `OwnedFd` at once.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
#[cfg(target_os = "linux")]
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use bytes::BytesMut;

/// A descriptor that becomes readable when the process `pid` (a child of ours, not yet
/// reaped) exits. Close-on-exec, as every pidfd.
///
/// # Errors
/// `ENOSYS` before Linux 5.3, `EINVAL` for a pid out of range, the system's error
/// otherwise.
#[cfg(target_os = "linux")]
pub(super) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "copas: pid out of range"))?;
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1; it touches
    // no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("copas: pidfd out of range"))?;
    // SAFETY: the kernel has just created this descriptor for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads once from `fd` into the spare capacity of `buf` (reserving `max` bytes first)
/// without zeroing it. Returns the byte count; 0 is end of stream.
pub(super) fn read_into(fd: BorrowedFd<'_>, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: `spare` is valid, writable memory of at least `len` bytes owned by `buf`;
    // read writes at most `len` bytes into it and never reads it.
    let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n.unsigned_abs();
    // SAFETY: read initialised the first `n` bytes of the spare capacity (n <= len).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Blocks until one of `fds` is readable (or hung up, or in error) or `timeout` passes
/// (`None`: no timeout). `EINTR` counts as a timeout.
pub(super) fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        // Round up, so that a short timeout does not become a busy poll.
        Some(d) => i32::try_from(d.as_millis().max(1)).unwrap_or(i32::MAX),
    };
    let count = libc::nfds_t::try_from(pfds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "copas: too many descriptors"))?;
    // SAFETY: `pfds` is a valid array of `count` pollfds for the duration of the call.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), count, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
