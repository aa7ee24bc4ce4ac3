//! Raw descriptor calls shared by every Unix: the non-blocking flag, a descriptor's
//! identity, and a zero-timeout readiness check.
//!
//! Invariant: every function takes a descriptor number and never closes or takes
//! ownership of it; an invalid number is reported as the system's error (`EBADF`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

use crate::reactor::Interest;

/// Sets `O_NONBLOCK` on the open file description behind `fd` (shared with its
/// duplicates).
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL reads and writes only the descriptor's flags; an
    // invalid descriptor yields EBADF, which is returned.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The (device, inode) pair of the file open under `fd`: the same for every duplicate of
/// it, different for whatever later reuses the number.
pub(crate) fn identity(fd: RawFd) -> io::Result<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory for one `stat`, which fstat fills on success.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// Whether `fd` is ready for `interest` right now (or in error or hung up, which the next
/// operation reports). Does not wait.
pub(crate) fn ready_now(fd: RawFd, interest: Interest) -> io::Result<bool> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n > 0 && p.revents != 0)
}

/// Words for a descriptor a task waits on, for copas-core's dumps: "read on PEER",
/// "write on PEER", "accept on LOCAL" for a listener, "read on LOCAL (no peer)" for an
/// unconnected datagram socket; `None` for a descriptor that is not a socket (the dump
/// then says "read on fd N"). Only query calls (`getpeername`, `getsockname`,
/// `getsockopt`) are made.
pub(crate) fn describe_fd(fd: RawFd, write: bool) -> Option<String> {
    // SAFETY: the dump calls this on the loop's thread for a task suspended on `fd`, which
    // stays registered (so open: a copas socket closes only after its registration is
    // removed, which wakes the waiter; a `Registration`'s owner must keep it open) for the
    // borrow's duration, which ends with this call. Only query calls are made through it.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    let dir = if write { "write" } else { "read" };
    if let Some(peer) = sock.peer_addr().ok().and_then(|a| a.as_socket()) {
        return Some(format!("{dir} on {peer}"));
    }
    let local = sock.local_addr().ok()?;
    let local = match local.as_socket() {
        Some(a) => a.to_string(),
        None => match local.as_pathname() {
            Some(p) => p.display().to_string(),
            None => "an unnamed local socket".to_owned(),
        },
    };
    if !write && sock.r#type().ok() == Some(socket2::Type::STREAM) {
        return Some(format!("accept on {local}"));
    }
    Some(format!("{dir} on {local} (no peer)"))
}
