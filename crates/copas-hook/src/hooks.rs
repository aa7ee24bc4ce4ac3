//! The interposed libc functions.
//!
//! Each is defined here under glibc's name and prototype (`#[no_mangle]`), so calls from
//! std and every other crate linked into the executable, and from shared libraries that
//! the dynamic linker binds to the executable's definitions, arrive here. Each one asks
//! [`block::mode`] (or, for waits, [`block::in_task`]) and either calls the real function
//! ([`sys`]) unchanged or runs its cooperative version.
//!
//! `fcntl` and `ioctl` are variadic in C. They are defined here with one pointer-sized
//! third argument, which on the architectures this module is built for (x86-64 and
//! AArch64 Linux) is passed exactly as a variadic one, and forwarded to the real,
//! variadic, function as such.
//!
//! # Invariant
//! A hook never unwinds into its caller: everything that may panic (a copas wait, which
//! unwinds a task at shutdown) runs under [`guarded`], which turns the panic into an
//! `ECANCELED` failure.
#![allow(unsafe_code)]
// The hooks are reached by their C names, not by a Rust path.
#![allow(unreachable_pub)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::time::{Duration, Instant};

use copas_net::Interest;
use libc::{
    c_int, c_uint, c_ulong, c_void, clockid_t, iovec, msghdr, nfds_t, pollfd, size_t, sockaddr,
    socklen_t, ssize_t, timespec, useconds_t,
};

use crate::block::{self, Mode};
use crate::fdtab::{self, Facts, Slot};
use crate::sys::{self, errno, set_errno};
use crate::wait;

/// Runs `f`; a panic (the runtime unwinding the task) becomes `fail` with `ECANCELED`.
fn guarded<R>(fail: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            set_errno(libc::ECANCELED);
            fail
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reads

/// Hooked `read(2)`.
///
/// # Safety
/// As for `read(2)`: `buf` must be valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t {
    match block::mode(fd) {
        // SAFETY: the caller upholds read's contract.
        Mode::Real => unsafe { sys::read(fd, buf, len) },
        Mode::Cooperative(slot, facts) => guarded(-1, || {
            block::transfer(fd, slot, facts, Interest::Read, len, false, |_| {
                // SAFETY: `buf` is valid for `len` bytes (the caller's contract); a
                // socket's `read` is `recv` with no flags.
                let r = unsafe {
                    sys::recvfrom(
                        fd,
                        buf,
                        len,
                        libc::MSG_DONTWAIT,
                        ptr::null_mut(),
                        ptr::null_mut(),
                    )
                };
                if r < 0 && errno() == libc::ENOTSOCK {
                    // What the hooks knew of the fd is wrong: it is not a socket.
                    slot.unlearn();
                    // SAFETY: as above.
                    return unsafe { sys::read(fd, buf, len) };
                }
                r
            })
        }),
        Mode::Emulated(slot) => block::emulate(fd, slot, Interest::Read, || {
            // SAFETY: the caller upholds read's contract.
            unsafe { sys::read(fd, buf, len) }
        }),
    }
}

/// Hooked `recv(2)`.
///
/// # Safety
/// As for `recv(2)`.
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: the caller upholds recv's contract, which is recvfrom's without an address.
    unsafe { recvfrom(fd, buf, len, flags, ptr::null_mut(), ptr::null_mut()) }
}

/// Hooked `recvfrom(2)`.
///
/// # Safety
/// As for `recvfrom(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    match flagged_mode(fd, flags, false) {
        // SAFETY: the caller upholds recvfrom's contract.
        Mode::Real => unsafe { sys::recvfrom(fd, buf, len, flags, addr, alen) },
        Mode::Cooperative(slot, facts) => guarded(-1, || {
            let all = wait_all(flags, facts);
            block::transfer(fd, slot, facts, Interest::Read, len, all, |done| {
                // SAFETY: `buf` is valid for `len` bytes and `done <= len`; the address
                // pointers are the caller's, valid or null.
                unsafe {
                    sys::recvfrom(
                        fd,
                        buf.cast::<u8>().add(done).cast(),
                        len - done,
                        flags | libc::MSG_DONTWAIT,
                        addr,
                        alen,
                    )
                }
            })
        }),
        Mode::Emulated(slot) => block::emulate(fd, slot, Interest::Read, || {
            // SAFETY: the caller upholds recvfrom's contract.
            unsafe { sys::recvfrom(fd, buf, len, flags, addr, alen) }
        }),
    }
}

/// How a call with `flags` on `fd` runs: as it is (`Mode::Real`) when the caller asked not
/// to block (`MSG_DONTWAIT`) or `real` says so (a null `msghdr`, for the kernel to reject),
/// else as [`block::mode`] decides.
fn flagged_mode(fd: c_int, flags: c_int, real: bool) -> Mode {
    if flags & libc::MSG_DONTWAIT != 0 || real {
        Mode::Real
    } else {
        block::mode(fd)
    }
}

/// Whether a receive must fill the whole buffer (`MSG_WAITALL` on a stream, not peeking).
fn wait_all(flags: c_int, facts: Facts) -> bool {
    flags & libc::MSG_WAITALL != 0 && flags & libc::MSG_PEEK == 0 && facts.is_stream()
}

/// Hooked `readv(2)`.
///
/// # Safety
/// As for `readv(2)`: `iov` must point to `n` valid iovecs.
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    match block::mode(fd) {
        // SAFETY: the caller upholds readv's contract.
        Mode::Real => unsafe { sys::readv(fd, iov, n) },
        Mode::Cooperative(slot, facts) => guarded(-1, || {
            // SAFETY: zeroed is a valid msghdr (null pointers, zero lengths).
            let mut msg: msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.cast_mut();
            msg.msg_iovlen = usize::try_from(n).unwrap_or(0);
            block::transfer(fd, slot, facts, Interest::Read, 0, false, |_| {
                // SAFETY: `msg` points to the caller's iovecs, valid by readv's contract.
                let r = unsafe { sys::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
                if r < 0 && errno() == libc::ENOTSOCK {
                    slot.unlearn();
                    // SAFETY: the caller upholds readv's contract.
                    return unsafe { sys::readv(fd, iov, n) };
                }
                r
            })
        }),
        Mode::Emulated(slot) => block::emulate(fd, slot, Interest::Read, || {
            // SAFETY: the caller upholds readv's contract.
            unsafe { sys::readv(fd, iov, n) }
        }),
    }
}

/// Hooked `recvmsg(2)`.
///
/// # Safety
/// As for `recvmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    match flagged_mode(fd, flags, msg.is_null()) {
        // SAFETY: the caller upholds recvmsg's contract.
        Mode::Real => unsafe { sys::recvmsg(fd, msg, flags) },
        Mode::Cooperative(slot, facts) => guarded(-1, || {
            // SAFETY: `msg` is valid by recvmsg's contract and was checked non-null. Read
            // by value: the kernel writes through `msg` below.
            let (iov_ptr, iov_len) = unsafe { ((*msg).msg_iov, (*msg).msg_iovlen) };
            // SAFETY: the iovecs are valid by recvmsg's contract.
            let iov = unsafe { iovecs(iov_ptr, iov_len) };
            let len = iov.iter().map(|v| v.iov_len).sum();
            let all = wait_all(flags, facts);
            let mut rest = Vec::new();
            block::transfer(fd, slot, facts, Interest::Read, len, all, |done| {
                if done == 0 {
                    // SAFETY: as above.
                    return unsafe { sys::recvmsg(fd, msg, flags | libc::MSG_DONTWAIT) };
                }
                // The rest of a MSG_WAITALL read: into the remaining buffers, without
                // the address and ancillary data, which came with the first part.
                rest = advance(iov, done);
                // SAFETY: zeroed is a valid msghdr.
                let mut more: msghdr = unsafe { std::mem::zeroed() };
                more.msg_iov = rest.as_mut_ptr();
                more.msg_iovlen = rest.len();
                // SAFETY: `more` points to iovecs within the caller's buffers.
                let r = unsafe { sys::recvmsg(fd, &mut more, flags | libc::MSG_DONTWAIT) };
                // SAFETY: `msg` is valid and not borrowed anywhere else.
                unsafe { (*msg).msg_flags |= more.msg_flags };
                r
            })
        }),
        Mode::Emulated(slot) => block::emulate(fd, slot, Interest::Read, || {
            // SAFETY: the caller upholds recvmsg's contract.
            unsafe { sys::recvmsg(fd, msg, flags) }
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Writes

/// Hooked `write(2)`.
///
/// # Safety
/// As for `write(2)`: `buf` must be valid for reads of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t {
    match block::mode(fd) {
        // SAFETY: the caller upholds write's contract.
        Mode::Real => unsafe { sys::write(fd, buf, len) },
        Mode::Cooperative(slot, facts) => guarded(-1, || {
            let all = facts.is_stream();
            block::transfer(fd, slot, facts, Interest::Write, len, all, |done| {
                // SAFETY: `buf` is valid for `len` bytes and `done <= len`. A socket's
                // `write` is `send` with no flags (SIGPIPE included).
                let r = unsafe {
                    sys::sendto(
                        fd,
                        buf.cast::<u8>().add(done).cast(),
                        len - done,
                        libc::MSG_DONTWAIT,
                        ptr::null(),
                        0,
                    )
                };
                if r < 0 && done == 0 && errno() == libc::ENOTSOCK {
                    slot.unlearn();
                    // SAFETY: the caller upholds write's contract.
                    return unsafe { sys::write(fd, buf, len) };
                }
                r
            })
        }),
        Mode::Emulated(slot) => block::emulate(fd, slot, Interest::Write, || {
            // SAFETY: the caller upholds write's contract.
            unsafe { sys::write(fd, buf, len) }
        }),
    }
}

/// Hooked `send(2)`.
///
/// # Safety
/// As for `send(2)`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: the caller upholds send's contract, which is sendto's without an address.
    unsafe { sendto(fd, buf, len, flags, ptr::null(), 0) }
}

/// Hooked `sendto(2)`.
///
/// # Safety
/// As for `sendto(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    match flagged_mode(fd, flags, false) {
        // SAFETY: the caller upholds sendto's contract.
        Mode::Real => unsafe { sys::sendto(fd, buf, len, flags, addr, alen) },
        Mode::Cooperative(slot, facts) => guarded(-1, || {
            let all = facts.is_stream();
            block::transfer(fd, slot, facts, Interest::Write, len, all, |done| {
                // SAFETY: `buf` is valid for `len` bytes and `done <= len`; `addr` is the
                // caller's, valid for `alen` bytes or null.
                unsafe {
                    sys::sendto(
                        fd,
                        buf.cast::<u8>().add(done).cast(),
                        len - done,
                        flags | libc::MSG_DONTWAIT,
                        addr,
                        alen,
                    )
                }
            })
        }),
        Mode::Emulated(slot) => block::emulate(fd, slot, Interest::Write, || {
            // SAFETY: the caller upholds sendto's contract.
            unsafe { sys::sendto(fd, buf, len, flags, addr, alen) }
        }),
    }
}

/// Hooked `writev(2)`.
///
/// # Safety
/// As for `writev(2)`: `iov` must point to `n` valid iovecs.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    match block::mode(fd) {
        // SAFETY: the caller upholds writev's contract.
        Mode::Real => unsafe { sys::writev(fd, iov, n) },
        Mode::Cooperative(slot, facts) => guarded(-1, || {
            let count = usize::try_from(n).unwrap_or(0);
            // SAFETY: the iovecs are valid by writev's contract.
            let bufs = unsafe { iovecs(iov, count) };
            let len = bufs.iter().map(|v| v.iov_len).sum();
            let all = facts.is_stream();
            let mut rest = Vec::new();
            block::transfer(fd, slot, facts, Interest::Write, len, all, |done| {
                // SAFETY: zeroed is a valid msghdr.
                let mut msg: msghdr = unsafe { std::mem::zeroed() };
                if done == 0 {
                    msg.msg_iov = iov.cast_mut();
                    msg.msg_iovlen = count;
                } else {
                    rest = advance(bufs, done);
                    msg.msg_iov = rest.as_mut_ptr();
                    msg.msg_iovlen = rest.len();
                }
                // SAFETY: `msg` points to iovecs within the caller's buffers.
                let r = unsafe { sys::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
                if r < 0 && done == 0 && errno() == libc::ENOTSOCK {
                    slot.unlearn();
                    // SAFETY: the caller upholds writev's contract.
                    return unsafe { sys::writev(fd, iov, n) };
                }
                r
            })
        }),
        Mode::Emulated(slot) => block::emulate(fd, slot, Interest::Write, || {
            // SAFETY: the caller upholds writev's contract.
            unsafe { sys::writev(fd, iov, n) }
        }),
    }
}

/// Hooked `sendmsg(2)`.
///
/// # Safety
/// As for `sendmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    match flagged_mode(fd, flags, msg.is_null()) {
        // SAFETY: the caller upholds sendmsg's contract.
        Mode::Real => unsafe { sys::sendmsg(fd, msg, flags) },
        Mode::Cooperative(slot, facts) => guarded(-1, || {
            // SAFETY: `msg` is valid by sendmsg's contract and was checked non-null.
            let m = unsafe { &*msg };
            // SAFETY: the iovecs are valid by sendmsg's contract.
            let bufs = unsafe { iovecs(m.msg_iov, m.msg_iovlen) };
            let len = bufs.iter().map(|v| v.iov_len).sum();
            let all = facts.is_stream();
            let mut rest = Vec::new();
            block::transfer(fd, slot, facts, Interest::Write, len, all, |done| {
                if done == 0 {
                    // SAFETY: as above.
                    return unsafe { sys::sendmsg(fd, msg, flags | libc::MSG_DONTWAIT) };
                }
                // The rest of a stream send: the ancillary data went with the first part.
                rest = advance(bufs, done);
                // SAFETY: zeroed is a valid msghdr.
                let mut more: msghdr = unsafe { std::mem::zeroed() };
                more.msg_iov = rest.as_mut_ptr();
                more.msg_iovlen = rest.len();
                // SAFETY: `more` points to iovecs within the caller's buffers.
                unsafe { sys::sendmsg(fd, &more, flags | libc::MSG_DONTWAIT) }
            })
        }),
        Mode::Emulated(slot) => block::emulate(fd, slot, Interest::Write, || {
            // SAFETY: the caller upholds sendmsg's contract.
            unsafe { sys::sendmsg(fd, msg, flags) }
        }),
    }
}

/// The caller's iovecs as a slice (empty for a null pointer).
///
/// # Safety
/// `iov` must be null or point to `n` valid iovecs that outlive the returned slice.
unsafe fn iovecs<'a>(iov: *const iovec, n: usize) -> &'a [iovec] {
    if iov.is_null() || n == 0 {
        &[]
    } else {
        // SAFETY: the caller guarantees `n` valid iovecs.
        unsafe { std::slice::from_raw_parts(iov, n) }
    }
}

/// The iovecs that remain after the first `done` bytes.
fn advance(iov: &[iovec], mut done: usize) -> Vec<iovec> {
    let mut rest = Vec::with_capacity(iov.len());
    for v in iov {
        if done >= v.iov_len {
            done -= v.iov_len;
            continue;
        }
        rest.push(iovec {
            // Stays within the buffer: `done < iov_len`.
            iov_base: v.iov_base.cast::<u8>().wrapping_add(done).cast(),
            iov_len: v.iov_len - done,
        });
        done = 0;
    }
    rest
}

// ---------------------------------------------------------------------------------------
// Connections

/// Hooked `connect(2)`: inside a task, a non-blocking connect and a wait for
/// writability, then `SO_ERROR`; the socket's flags are restored afterwards.
///
/// # Safety
/// As for `connect(2)`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    match block::mode(fd) {
        Mode::Cooperative(slot, facts) => guarded(-1, || {
            // SAFETY: the caller upholds connect's contract.
            unsafe { connect_cooperative(fd, slot, facts, addr, len) }
        }),
        // SAFETY: the caller upholds connect's contract.
        Mode::Real | Mode::Emulated(..) => unsafe { sys::connect(fd, addr, len) },
    }
}

/// # Safety
/// As for `connect(2)`.
unsafe fn connect_cooperative(
    fd: c_int,
    slot: &Slot,
    facts: Facts,
    addr: *const sockaddr,
    len: socklen_t,
) -> c_int {
    // SAFETY: F_GETFL takes no argument.
    let fl = unsafe { sys::fcntl(fd, libc::F_GETFL, 0) };
    // SAFETY: F_SETFL takes an int.
    if fl < 0 || unsafe { sys::fcntl(fd, libc::F_SETFL, (fl | libc::O_NONBLOCK) as c_ulong) } < 0 {
        // SAFETY: the caller upholds connect's contract.
        return unsafe { sys::connect(fd, addr, len) };
    }
    let own = block::deadline(slot.write_timeout());
    let r = loop {
        // SAFETY: the caller upholds connect's contract.
        let r = unsafe { sys::connect(fd, addr, len) };
        let e = errno();
        match r {
            0 => break 0,
            // A Unix socket's full backlog: a blocking connect waits for room.
            _ if e == libc::EAGAIN => {
                if let Err(f) = wait::wait(fd, slot, facts.generation(), Interest::Write, own) {
                    set_errno(block::failure_errno(f, own, libc::EAGAIN));
                    break -1;
                }
            }
            _ if e == libc::EINPROGRESS => break connected(fd, slot, facts, own),
            _ => break -1,
        }
    };
    let saved = errno();
    // SAFETY: F_SETFL takes an int: the flags as they were.
    unsafe { sys::fcntl(fd, libc::F_SETFL, fl as c_ulong) };
    set_errno(saved);
    r
}

/// Waits until an in-progress connect finishes and reports it as connect would.
fn connected(fd: c_int, slot: &Slot, facts: Facts, own: Option<Instant>) -> c_int {
    loop {
        if let Err(f) = wait::wait(fd, slot, facts.generation(), Interest::Write, own) {
            // A blocking connect cut short by SO_SNDTIMEO reports EINPROGRESS.
            set_errno(block::failure_errno(f, own, libc::EINPROGRESS));
            return -1;
        }
        if sys::poll_one(fd, libc::POLLOUT, 0) <= 0 {
            continue;
        }
        let mut err: c_int = 0;
        let mut elen = std::mem::size_of::<c_int>() as socklen_t;
        // SAFETY: `err` and `elen` are valid and `elen` is `err`'s size.
        let r = unsafe {
            sys::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut err).cast(),
                &mut elen,
            )
        };
        if r < 0 {
            return -1;
        }
        if err != 0 {
            set_errno(err);
            return -1;
        }
        return 0;
    }
}

/// Hooked `accept(2)`.
///
/// # Safety
/// As for `accept(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller upholds accept's contract, which is accept4's with no flags.
    unsafe { accept4(fd, addr, len, 0) }
}

/// Hooked `accept4(2)`: inside a task, the listener is made non-blocking (for good; the
/// hooks keep `fcntl` and `ioctl` showing the user's flag, and give callers outside tasks
/// their blocking `accept` back) and the task waits for a connection on the reactor.
///
/// # Safety
/// As for `accept4(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    match block::mode(fd) {
        // SAFETY: the caller upholds accept4's contract.
        Mode::Real => unsafe { sys::accept4(fd, addr, len, flags) },
        Mode::Cooperative(slot, facts) => guarded(-1, || {
            if !facts.own_nonblocking() {
                // Marked first: a thread that accepts meanwhile then emulates blocking.
                slot.set_own_nonblocking(facts);
                if !set_nonblocking(fd) {
                    // SAFETY: the caller upholds accept4's contract.
                    return unsafe { sys::accept4(fd, addr, len, flags) };
                }
            }
            block::retry(fd, slot, facts, Interest::Read, || {
                // SAFETY: the caller upholds accept4's contract.
                unsafe { sys::accept4(fd, addr, len, flags) }
            })
        }),
        Mode::Emulated(slot) => block::emulate(fd, slot, Interest::Read, || {
            // SAFETY: the caller upholds accept4's contract.
            unsafe { sys::accept4(fd, addr, len, flags) }
        }),
    }
}

/// Sets `O_NONBLOCK` on `fd`'s file; whether it worked.
fn set_nonblocking(fd: c_int) -> bool {
    // SAFETY: F_GETFL takes no argument.
    let fl = unsafe { sys::fcntl(fd, libc::F_GETFL, 0) };
    // SAFETY: F_SETFL takes an int.
    fl >= 0 && unsafe { sys::fcntl(fd, libc::F_SETFL, (fl | libc::O_NONBLOCK) as c_ulong) } >= 0
}

/// Forgets what is known of `fd` and wakes every task waiting on it: it is about to be
/// closed or replaced.
fn closing(fd: c_int) -> Option<&'static Slot> {
    let slot = fdtab::existing_slot(fd)?;
    let ended = slot.close_begin();
    if slot.has_waiters() {
        guarded((), || wait::close(fd, ended));
    } else {
        guarded((), || wait::forget_local(fd));
    }
    Some(slot)
}

/// Hooked `close(2)`: deregisters the fd from the hooks' waits (waking tasks blocked on
/// it, on any thread, with `EBADF`) before closing it.
///
/// # Safety
/// As for `close(2)`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if !block::installed() {
        // SAFETY: the caller upholds close's contract.
        return unsafe { sys::close(fd) };
    }
    let slot = closing(fd);
    // SAFETY: the caller upholds close's contract.
    let r = unsafe { sys::close(fd) };
    if let Some(s) = slot {
        s.close_end();
    }
    r
}

/// Hooked `dup2(2)`: replacing `new` closes it, as for [`close`].
///
/// # Safety
/// As for `dup2(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    let slot = (block::installed() && old != new)
        .then(|| closing(new))
        .flatten();
    // SAFETY: the caller upholds dup2's contract.
    let r = unsafe { sys::dup2(old, new) };
    if let Some(s) = slot {
        s.close_end();
    }
    r
}

/// Hooked `dup3(2)`: replacing `new` closes it, as for [`close`].
///
/// # Safety
/// As for `dup3(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let slot = (block::installed() && old != new)
        .then(|| closing(new))
        .flatten();
    // SAFETY: the caller upholds dup3's contract.
    let r = unsafe { sys::dup3(old, new, flags) };
    if let Some(s) = slot {
        s.close_end();
    }
    r
}

// ---------------------------------------------------------------------------------------
// Socket state

/// Hooked `fcntl(2)`: `F_GETFL` shows the blocking flag the user set, `F_SETFL` records
/// it (and keeps a listener the hooks made non-blocking so).
///
/// # Safety
/// As for `fcntl(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller upholds fcntl's contract.
    unsafe { fcntl_hook(fd, cmd, arg) }
}

/// Hooked `fcntl64`, glibc's other name for `fcntl`.
///
/// # Safety
/// As for `fcntl(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller upholds fcntl's contract.
    unsafe { fcntl_hook(fd, cmd, arg) }
}

/// # Safety
/// As for `fcntl(2)`.
unsafe fn fcntl_hook(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let known = if block::installed() && (cmd == libc::F_GETFL || cmd == libc::F_SETFL) {
        fdtab::existing_slot(fd).and_then(|s| Some((s, s.peek()?)))
    } else {
        None
    };
    let Some((slot, facts)) = known else {
        // SAFETY: the caller upholds fcntl's contract.
        return unsafe { sys::fcntl(fd, cmd, arg) };
    };
    if cmd == libc::F_GETFL {
        // SAFETY: F_GETFL takes no argument.
        let r = unsafe { sys::fcntl(fd, cmd, arg) };
        if r >= 0 && facts.own_nonblocking() && !facts.user_nonblocking() {
            return r & !libc::O_NONBLOCK;
        }
        return r;
    }
    let user = arg as c_int & libc::O_NONBLOCK != 0;
    let real = if facts.own_nonblocking() {
        arg | libc::O_NONBLOCK as c_ulong
    } else {
        arg
    };
    // SAFETY: F_SETFL takes an int.
    let r = unsafe { sys::fcntl(fd, cmd, real) };
    if r >= 0 {
        slot.set_user_nonblocking(user);
    }
    r
}

/// Hooked `ioctl(2)`: `FIONBIO` records the blocking flag the user set; everything else
/// passes through.
///
/// # Safety
/// As for `ioctl(2)`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    if request != libc::FIONBIO as c_ulong || arg == 0 || !block::installed() {
        // SAFETY: the caller upholds ioctl's contract.
        return unsafe { sys::ioctl(fd, request, arg) };
    }
    // SAFETY: FIONBIO's argument is a pointer to an int (checked non-null).
    let on = unsafe { *(arg as *const c_int) } != 0;
    let known = fdtab::existing_slot(fd).and_then(|s| Some((s, s.peek()?)));
    if let Some((slot, facts)) = known {
        if facts.own_nonblocking() && !on {
            // The file stays non-blocking for the hooks; the user sees it blocking.
            // SAFETY: F_GETFL takes no argument; it checks the fd is open.
            if unsafe { sys::fcntl(fd, libc::F_GETFL, 0) } < 0 {
                return -1;
            }
            slot.set_user_nonblocking(false);
            return 0;
        }
    }
    // SAFETY: the caller upholds ioctl's contract.
    let r = unsafe { sys::ioctl(fd, request, arg) };
    if r == 0 {
        if let Some((slot, _)) = known {
            slot.set_user_nonblocking(on);
        }
    }
    r
}

/// Hooked `setsockopt(2)`: `SO_RCVTIMEO` and `SO_SNDTIMEO` are recorded so tasks'
/// waits honour them; the kernel gets every option as usual (and `getsockopt` reads
/// them back from it).
///
/// # Safety
/// As for `setsockopt(2)`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: the caller upholds setsockopt's contract.
    let r = unsafe { sys::setsockopt(fd, level, name, val, len) };
    if r == 0
        && block::installed()
        && level == libc::SOL_SOCKET
        && (name == libc::SO_RCVTIMEO || name == libc::SO_SNDTIMEO)
        && !val.is_null()
        && len as usize >= std::mem::size_of::<libc::timeval>()
    {
        if let Some(slot) = fdtab::existing_slot(fd) {
            // SAFETY: the kernel accepted `val` as a timeval of `len` bytes.
            let tv = unsafe { ptr::read_unaligned(val.cast::<libc::timeval>()) };
            slot.set_timeout(name, fdtab::timeval_duration(&tv));
        }
    }
    r
}

// ---------------------------------------------------------------------------------------
// Waiting

/// Hooked `poll(2)`: inside a task, a non-zero timeout waits on the reactor for any of
/// the fds (one fd directly, several through a private epoll instance).
///
/// # Safety
/// As for `poll(2)`: `fds` must point to `n` valid pollfds.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    if timeout == 0 || !block::installed() || !block::in_task() || (fds.is_null() && n > 0) {
        // SAFETY: the caller upholds poll's contract.
        return unsafe { sys::poll(fds, n, timeout) };
    }
    let fds: &mut [pollfd] = if n == 0 {
        &mut []
    } else {
        // SAFETY: the caller guarantees `n` valid pollfds.
        unsafe { std::slice::from_raw_parts_mut(fds, n as usize) }
    };
    guarded(-1, || crate::poll::poll(fds, timeout))
}

/// Sleeps the current task; cancellation or a `with_timeout` scope ends it early.
fn task_sleep(d: Duration) {
    // A cancelled task's sleep ends at once: the legacy caller cannot be told (EINTR
    // would make std retry forever) and its next socket call reports the cancellation.
    let _ = copas_core::sleep(d);
}

fn valid(ts: &timespec) -> Option<Duration> {
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec)
        .ok()
        .filter(|&n| n < 1_000_000_000)?;
    Some(Duration::new(secs, nanos))
}

/// Hooked `nanosleep(2)`: a copas sleep inside a task.
///
/// # Safety
/// As for `nanosleep(2)`.
#[no_mangle]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    if req.is_null() || !block::installed() || !block::in_task() {
        // SAFETY: the caller upholds nanosleep's contract.
        return unsafe { sys::nanosleep(req, rem) };
    }
    // SAFETY: `req` is valid by nanosleep's contract and non-null.
    let Some(d) = valid(unsafe { &*req }) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    guarded((), || task_sleep(d));
    0
}

/// Hooked `clock_nanosleep(2)`: a copas sleep inside a task, for the realtime,
/// monotonic, boot-time and TAI clocks (relative or `TIMER_ABSTIME`). CPU-time clocks run
/// the real function.
///
/// # Safety
/// As for `clock_nanosleep(2)`.
#[no_mangle]
pub unsafe extern "C" fn clock_nanosleep(
    clock: clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    let wall = matches!(
        clock,
        libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME | libc::CLOCK_TAI
    );
    if !wall || req.is_null() || !block::installed() || !block::in_task() {
        // SAFETY: the caller upholds clock_nanosleep's contract.
        return unsafe { sys::clock_nanosleep(clock, flags, req, rem) };
    }
    // SAFETY: `req` is valid by clock_nanosleep's contract and non-null.
    let Some(target) = valid(unsafe { &*req }) else {
        return libc::EINVAL;
    };
    let d = if flags & libc::TIMER_ABSTIME != 0 {
        let Some(now) = sys::clock_now(clock).as_ref().and_then(valid) else {
            return libc::EINVAL;
        };
        target.saturating_sub(now)
    } else {
        target
    };
    guarded((), || task_sleep(d));
    0
}

/// Hooked `usleep(3)`: a copas sleep inside a task.
///
/// # Safety
/// None beyond the C function's (it takes no pointers).
#[no_mangle]
pub unsafe extern "C" fn usleep(us: useconds_t) -> c_int {
    if !block::installed() || !block::in_task() {
        // SAFETY: usleep takes no pointers.
        return unsafe { sys::usleep(us) };
    }
    guarded((), || task_sleep(Duration::from_micros(us.into())));
    0
}

/// Hooked `sleep(3)`: a copas sleep inside a task.
///
/// # Safety
/// None beyond the C function's (it takes no pointers).
#[no_mangle]
pub unsafe extern "C" fn sleep(secs: c_uint) -> c_uint {
    if !block::installed() || !block::in_task() {
        // SAFETY: sleep takes no pointers.
        return unsafe { sys::sleep(secs) };
    }
    guarded((), || task_sleep(Duration::from_secs(secs.into())));
    0
}

// ---------------------------------------------------------------------------------------
// Name lookup

/// A lookup's result list, freed unless taken: an abandoned lookup (the task was
/// cancelled or timed out while a worker ran it) frees its result on the worker.
struct Lookup {
    code: c_int,
    errno: c_int,
    list: *mut libc::addrinfo,
}

// SAFETY: the list is glibc-allocated memory owned by this value alone until taken;
// `freeaddrinfo` may run on any thread.
unsafe impl Send for Lookup {}

impl Drop for Lookup {
    fn drop(&mut self) {
        if !self.list.is_null() {
            // SAFETY: `list` came from a successful getaddrinfo and was not taken.
            unsafe { libc::freeaddrinfo(self.list) };
        }
    }
}

/// Hooked `getaddrinfo(3)`: inside a task the real lookup (which may wait for DNS) runs
/// on copas's `unblock` worker pool while the task is suspended.
///
/// # Safety
/// As for `getaddrinfo(3)`.
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(
    node: *const libc::c_char,
    service: *const libc::c_char,
    hints: *const libc::addrinfo,
    res: *mut *mut libc::addrinfo,
) -> c_int {
    let Some(real) = sys::getaddrinfo_fn() else {
        set_errno(libc::ENOSYS);
        return libc::EAI_SYSTEM;
    };
    if !block::installed() || !block::in_task() || res.is_null() {
        // SAFETY: the caller upholds getaddrinfo's contract.
        return unsafe { real(node, service, hints, res) };
    }
    // The worker must not borrow the caller's memory: an abandoned lookup outlives it.
    let own = |p: *const libc::c_char| {
        // SAFETY: non-null strings are NUL-terminated by getaddrinfo's contract.
        (!p.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(p) }.to_owned())
    };
    let (node, service) = (own(node), own(service));
    // Only these four fields of `hints` are read by getaddrinfo; the rest must be zero.
    // SAFETY: a non-null `hints` is valid by getaddrinfo's contract.
    let hints = (!hints.is_null()).then(|| unsafe {
        let h = &*hints;
        (h.ai_flags, h.ai_family, h.ai_socktype, h.ai_protocol)
    });
    let lookup = move || {
        let h = hints.map(|(flags, family, socktype, protocol)| {
            // SAFETY: zeroed is a valid addrinfo (null pointers, zero lengths).
            let mut a: libc::addrinfo = unsafe { std::mem::zeroed() };
            a.ai_flags = flags;
            a.ai_family = family;
            a.ai_socktype = socktype;
            a.ai_protocol = protocol;
            a
        });
        let mut list = ptr::null_mut();
        // SAFETY: the strings and hints are owned by this closure; `list` is writable.
        let code = unsafe {
            real(
                node.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
                service.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
                h.as_ref()
                    .map_or(ptr::null(), |h| h as *const libc::addrinfo),
                &mut list,
            )
        };
        Lookup {
            code,
            errno: errno(),
            list: if code == 0 { list } else { ptr::null_mut() },
        }
    };
    let done = guarded(
        Err(std::io::Error::from_raw_os_error(libc::ECANCELED)),
        || copas_core::unblock(lookup),
    );
    match done {
        Ok(mut l) => {
            if l.code == libc::EAI_SYSTEM {
                set_errno(l.errno);
            }
            // SAFETY: `res` is writable by getaddrinfo's contract (checked non-null); the
            // list now belongs to the caller, who frees it with freeaddrinfo.
            unsafe { *res = std::mem::replace(&mut l.list, ptr::null_mut()) };
            l.code
        }
        Err(e) => {
            set_errno(if copas_core::is_cancelled(&e) {
                libc::ECANCELED
            } else if e.kind() == std::io::ErrorKind::TimedOut {
                libc::ETIMEDOUT
            } else {
                e.raw_os_error().unwrap_or(libc::EIO)
            });
            libc::EAI_SYSTEM
        }
    }
}

/// The hooks by name, for [`crate::install`]'s check that they are the definitions the
/// program uses; referencing them also keeps the linker from dropping any.
pub(crate) fn table() -> [(&'static std::ffi::CStr, usize); 26] {
    [
        (c"read", read as *const () as usize),
        (c"write", write as *const () as usize),
        (c"readv", readv as *const () as usize),
        (c"writev", writev as *const () as usize),
        (c"recv", recv as *const () as usize),
        (c"send", send as *const () as usize),
        (c"recvfrom", recvfrom as *const () as usize),
        (c"sendto", sendto as *const () as usize),
        (c"recvmsg", recvmsg as *const () as usize),
        (c"sendmsg", sendmsg as *const () as usize),
        (c"connect", connect as *const () as usize),
        (c"accept", accept as *const () as usize),
        (c"accept4", accept4 as *const () as usize),
        (c"close", close as *const () as usize),
        (c"dup2", dup2 as *const () as usize),
        (c"dup3", dup3 as *const () as usize),
        (c"poll", poll as *const () as usize),
        (c"nanosleep", nanosleep as *const () as usize),
        (c"clock_nanosleep", clock_nanosleep as *const () as usize),
        (c"usleep", usleep as *const () as usize),
        (c"sleep", sleep as *const () as usize),
        (c"fcntl", fcntl as *const () as usize),
        (c"fcntl64", fcntl64 as *const () as usize),
        (c"ioctl", ioctl as *const () as usize),
        (c"setsockopt", setsockopt as *const () as usize),
        (c"getaddrinfo", getaddrinfo as *const () as usize),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(buf: &mut [u8]) -> iovec {
        iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }
    }

    #[test]
    fn advance_skips_whole_and_partial_buffers() {
        let (mut a, mut b, mut c) = ([0u8; 3], [0u8; 0], [0u8; 5]);
        let v = [iov(&mut a), iov(&mut b), iov(&mut c)];
        assert_eq!(advance(&v, 0).len(), 2, "empty buffers are dropped");
        let rest = advance(&v, 4);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].iov_len, 4);
        assert_eq!(rest[0].iov_base, c.as_mut_ptr().wrapping_add(1).cast());
        assert!(advance(&v, 8).is_empty());
        assert!(advance(&v, 100).is_empty());
    }

    #[test]
    fn sleep_arguments_are_validated_like_the_kernel() {
        let ts = |s, n| timespec {
            tv_sec: s,
            tv_nsec: n,
        };
        assert_eq!(valid(&ts(1, 5)), Some(Duration::new(1, 5)));
        assert_eq!(
            valid(&ts(0, 999_999_999)),
            Some(Duration::new(0, 999_999_999))
        );
        assert_eq!(valid(&ts(0, 1_000_000_000)), None);
        assert_eq!(valid(&ts(-1, 0)), None);
        assert_eq!(valid(&ts(0, -1)), None);
    }
}
