//! The real libc functions behind the hooks, and errno.
//!
//! Each real function is found once with `dlsym(RTLD_NEXT, name)` (the next definition
//! after this executable's: glibc's) and kept in an atomic. Resolution is lazy, because
//! hooks run before `main` (std and the dynamic loader call `read`, `close`, `poll`...),
//! and re-entrancy-safe: while a thread is inside `dlsym`, the hooks it reaches run the
//! raw system call instead (`dlsym` may read files or take locks through the very symbols
//! being resolved).
//!
//! # Invariant
//! A slot holds 0 or the address `dlsym` returned for that slot's name, which is a
//! function with the C signature the slot's accessor transmutes it to: glibc's own
//! prototype for that name.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{
    c_int, c_uint, c_ulong, c_void, clockid_t, iovec, msghdr, nfds_t, pollfd, size_t, sockaddr,
    socklen_t, ssize_t, timespec, useconds_t,
};

thread_local! {
    /// Set while this thread is inside `dlsym`: nested hooks use raw system calls.
    static RESOLVING: Cell<bool> = const { Cell::new(false) };
}

/// Looks `name` up once; 0 when it cannot be looked up now (re-entrant) or at all.
fn resolve(slot: &AtomicUsize, name: &CStr) -> usize {
    let addr = slot.load(Ordering::Acquire);
    if addr != 0 {
        return addr;
    }
    if RESOLVING.with(Cell::get) {
        return 0;
    }
    RESOLVING.with(|r| r.set(true));
    // SAFETY: `name` is a NUL-terminated string; RTLD_NEXT is a valid pseudo-handle in an
    // executable linked against libdl (glibc 2.34+ has it in libc itself).
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    RESOLVING.with(|r| r.set(false));
    if found != 0 {
        // Racing resolvers store the same address.
        slot.store(found, Ordering::Release);
    }
    found
}

/// Where `name` resolves for the program as a whole (the first definition in load
/// order), for [`crate::install`]'s check that this executable's hooks are the ones used.
pub(crate) fn default_symbol(name: &CStr) -> usize {
    // SAFETY: as in `resolve`; RTLD_DEFAULT is the global scope.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// The address of the real `name`, resolving it now if needed (0 if it cannot be found).
pub(crate) fn next_symbol(name: &CStr) -> usize {
    let probe = AtomicUsize::new(0);
    resolve(&probe, name)
}

/// The calling thread's `errno`.
pub(crate) fn errno() -> c_int {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for the thread.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e }
}

/// Declares `pub(crate) unsafe fn $name(args) -> ret` calling the real function, or
/// `$fallback` (a raw system call) while it cannot be resolved.
macro_rules! real {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty = $fallback:expr; )*) => {$(
        /// Calls the real libc function of the same name.
        ///
        /// # Safety
        /// As for the libc function: the pointers must be valid as its manual requires.
        pub(crate) unsafe fn $name($($arg: $ty),*) -> $ret {
            static SLOT: AtomicUsize = AtomicUsize::new(0);
            let name = const {
                match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                    Ok(s) => s,
                    Err(_) => panic!("bad symbol name"),
                }
            };
            match resolve(&SLOT, name) {
                0 => {
                    // SAFETY: the caller upholds the call's contract; the raw system call
                    // has the same one.
                    unsafe { $fallback as $ret }
                }
                addr => {
                    type F = unsafe extern "C" fn($($ty),*) -> $ret;
                    // SAFETY: by the module invariant `addr` is glibc's function of this
                    // name, whose prototype is this signature.
                    let f = unsafe { std::mem::transmute::<usize, F>(addr) };
                    // SAFETY: the caller upholds the call's contract.
                    unsafe { f($($arg),*) }
                }
            }
        }
    )*};
}

real! {
    read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t =
        libc::syscall(libc::SYS_read, fd, buf, len);
    write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t =
        libc::syscall(libc::SYS_write, fd, buf, len);
    readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t =
        libc::syscall(libc::SYS_readv, fd, iov, n);
    writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t =
        libc::syscall(libc::SYS_writev, fd, iov, n);
    recvfrom(
        fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr,
        alen: *mut socklen_t
    ) -> ssize_t = libc::syscall(libc::SYS_recvfrom, fd, buf, len, flags, addr, alen);
    sendto(
        fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr,
        alen: socklen_t
    ) -> ssize_t = libc::syscall(libc::SYS_sendto, fd, buf, len, flags, addr, alen);
    recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t =
        libc::syscall(libc::SYS_recvmsg, fd, msg, flags);
    sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t =
        libc::syscall(libc::SYS_sendmsg, fd, msg, flags);
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int =
        libc::syscall(libc::SYS_connect, fd, addr, len);
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int =
        libc::syscall(libc::SYS_accept4, fd, addr, len, flags);
    close(fd: c_int) -> c_int = libc::syscall(libc::SYS_close, fd);
    dup2(old: c_int, new: c_int) -> c_int = libc::syscall(libc::SYS_dup3, old, new, 0);
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int =
        libc::syscall(libc::SYS_dup3, old, new, flags);
    poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int = raw_poll(fds, n, timeout);
    nanosleep(req: *const timespec, rem: *mut timespec) -> c_int =
        libc::syscall(libc::SYS_nanosleep, req, rem);
    clock_nanosleep(clock: clockid_t, flags: c_int, req: *const timespec, rem: *mut timespec)
        -> c_int = raw_clock_nanosleep(clock, flags, req, rem);
    usleep(us: useconds_t) -> c_int = raw_usleep(us);
    sleep(secs: c_uint) -> c_uint = raw_sleep(secs);
    setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t)
        -> c_int = libc::syscall(libc::SYS_setsockopt, fd, level, name, val, len);
    getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t)
        -> c_int = libc::syscall(libc::SYS_getsockopt, fd, level, name, val, len);
    fstat(fd: c_int, st: *mut libc::stat) -> c_int = libc::syscall(libc::SYS_fstat, fd, st);
}

/// `fcntl` with an integer (or pointer-sized) third argument.
///
/// # Safety
/// As for `fcntl(2)`: when `cmd` takes a pointer, `arg` must be a valid one.
pub(crate) unsafe fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    match resolve(&SLOT, c"fcntl") {
        // SAFETY: the caller upholds the call's contract.
        0 => unsafe { libc::syscall(libc::SYS_fcntl, fd, cmd, arg) as c_int },
        addr => {
            type F = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
            // SAFETY: by the module invariant `addr` is glibc's variadic `fcntl`.
            let f = unsafe { std::mem::transmute::<usize, F>(addr) };
            // SAFETY: the caller upholds the call's contract.
            unsafe { f(fd, cmd, arg) }
        }
    }
}

/// `ioctl` with a pointer-sized third argument.
///
/// # Safety
/// As for `ioctl(2)`: `arg` must be what `request` expects.
pub(crate) unsafe fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    match resolve(&SLOT, c"ioctl") {
        // SAFETY: the caller upholds the call's contract.
        0 => unsafe { libc::syscall(libc::SYS_ioctl, fd, request, arg) as c_int },
        addr => {
            type F = unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int;
            // SAFETY: by the module invariant `addr` is glibc's variadic `ioctl`.
            let f = unsafe { std::mem::transmute::<usize, F>(addr) };
            // SAFETY: the caller upholds the call's contract.
            unsafe { f(fd, request, arg) }
        }
    }
}

/// glibc's `getaddrinfo`.
pub(crate) type GetAddrInfo = unsafe extern "C" fn(
    *const libc::c_char,
    *const libc::c_char,
    *const libc::addrinfo,
    *mut *mut libc::addrinfo,
) -> c_int;

/// `getaddrinfo`, or `None` when it cannot be resolved.
pub(crate) fn getaddrinfo_fn() -> Option<GetAddrInfo> {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    match resolve(&SLOT, c"getaddrinfo") {
        0 => None,
        // SAFETY: by the module invariant `addr` is glibc's `getaddrinfo`.
        addr => Some(unsafe { std::mem::transmute::<usize, GetAddrInfo>(addr) }),
    }
}

/// `poll` as a raw system call (`ppoll`, which every Linux architecture has).
///
/// # Safety
/// `fds` must point to `n` valid `pollfd`s.
unsafe fn raw_poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> i64 {
    let ts = (timeout >= 0).then(|| timespec {
        tv_sec: (timeout / 1000).into(),
        tv_nsec: ((timeout % 1000) * 1_000_000).into(),
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const timespec);
    // SAFETY: the caller guarantees `fds`; `tsp` is null or points to `ts`.
    unsafe { libc::syscall(libc::SYS_ppoll, fds, n, tsp, std::ptr::null::<c_void>(), 0) }
}

/// `clock_nanosleep` as a raw system call, returning the error number as glibc does.
///
/// # Safety
/// `req` must be valid; `rem` null or valid.
unsafe fn raw_clock_nanosleep(
    clock: clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> i64 {
    // SAFETY: the caller guarantees the pointers.
    let r = unsafe { libc::syscall(libc::SYS_clock_nanosleep, clock, flags, req, rem) };
    if r == -1 {
        i64::from(errno())
    } else {
        0
    }
}

/// `usleep` through the raw `nanosleep` system call.
///
/// # Safety
/// None: it is `unsafe` only to be called like the other fallbacks.
unsafe fn raw_usleep(us: useconds_t) -> i64 {
    let ts = timespec {
        tv_sec: (us / 1_000_000).into(),
        tv_nsec: i64::from(us % 1_000_000) * 1000,
    };
    // SAFETY: `ts` is a valid timespec; no remainder is asked for.
    unsafe { libc::syscall(libc::SYS_nanosleep, &ts, std::ptr::null_mut::<timespec>()) }
}

/// `sleep` through the raw `nanosleep` system call; returns the seconds left if
/// interrupted.
///
/// # Safety
/// None: it is `unsafe` only to be called like the other fallbacks.
unsafe fn raw_sleep(secs: c_uint) -> i64 {
    let ts = timespec {
        tv_sec: secs.into(),
        tv_nsec: 0,
    };
    let mut rem = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both timespecs are valid.
    match unsafe { libc::syscall(libc::SYS_nanosleep, &ts, &mut rem) } {
        0 => 0,
        _ => rem.tv_sec + i64::from(rem.tv_nsec > 0),
    }
}

/// The real `poll` on one fd.
pub(crate) fn poll_one(fd: c_int, events: libc::c_short, timeout_ms: c_int) -> c_int {
    let mut p = pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the duration of the call.
    unsafe { poll(&mut p, 1, timeout_ms) }
}

/// The real `poll` on a slice of pollfds, without waiting.
pub(crate) fn poll_now(fds: &mut [pollfd]) -> c_int {
    // SAFETY: `fds` is valid for its length, which fits in nfds_t.
    unsafe { poll(fds.as_mut_ptr(), fds.len() as nfds_t, 0) }
}

/// A new epoll instance (close-on-exec), or the errno.
pub(crate) fn epoll_create() -> Result<c_int, c_int> {
    // SAFETY: epoll_create1 takes no pointers.
    match unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } {
        -1 => Err(errno()),
        fd => Ok(fd),
    }
}

/// Adds `fd` to the epoll instance `ep` for `events` (level-triggered).
pub(crate) fn epoll_add(ep: c_int, fd: c_int, events: u32) -> Result<(), c_int> {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call.
    match unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } {
        -1 => Err(errno()),
        _ => Ok(()),
    }
}

/// The real `close`, keeping errno as it was.
pub(crate) fn close_quietly(fd: c_int) {
    let saved = errno();
    // SAFETY: the caller owns `fd` and nothing else uses it after this call.
    unsafe { close(fd) };
    set_errno(saved);
}

/// Reads the current time of `clock`, or `None` if the clock cannot be read.
pub(crate) fn clock_now(clock: clockid_t) -> Option<timespec> {
    let mut ts = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    (unsafe { libc::clock_gettime(clock, &mut ts) } == 0).then_some(ts)
}

/// The (device, inode) of the file open under `fd`, or the errno.
pub(crate) fn identity(fd: c_int) -> Result<(u64, u64), c_int> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat`.
    if unsafe { fstat(fd, &mut st) } != 0 {
        return Err(errno());
    }
    Ok((st.st_dev, st.st_ino))
}
