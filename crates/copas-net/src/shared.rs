//! Helpers shared by the socket types: address resolution and std's timeout rules.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::addr::ToSocketAddrs;

/// Tries `f` on each address `addr` resolves to (host names off the loop, see
/// [`ToSocketAddrs`]); returns the first success or the last
/// error.
pub(crate) fn each_addr<T>(
    addr: impl ToSocketAddrs,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match f(a) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "copas: the address resolved to nothing",
        )
    }))
}

/// std's rule for socket timeouts: `Some(0)` is invalid (use `None` for no timeout).
pub(crate) fn check_timeout(t: Option<Duration>) -> io::Result<()> {
    if t == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "copas: a zero timeout is not allowed; use None for no timeout",
        ));
    }
    Ok(())
}

/// The deadline of an operation that starts now under `timeout` (`None` when there is
/// none, or when it lies beyond what `Instant` can represent).
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|d| Instant::now().checked_add(d))
}
