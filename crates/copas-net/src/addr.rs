//! Addresses to connect or bind to, resolved without blocking the loop.
//!
//! Invariant: a value that already is an IP address (a `SocketAddr`, an `(IpAddr, u16)`,
//! a string that parses as one) never reaches the resolver; a host name is looked up by
//! `copas_core::resolve`, that is on the `unblock` worker pool, so the thread's other tasks
//! keep running while the name server answers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Something that names one or more socket addresses: copas's counterpart of
/// [`std::net::ToSocketAddrs`], implemented for the same types (`SocketAddr` and its V4/V6
/// forms, `(IpAddr, u16)` and friends, `(&str, u16)`, `(String, u16)`, `str`, `String`,
/// `&[SocketAddr]`, and references to any of them), so every call that took std's trait
/// takes the same arguments.
///
/// The difference is where a host name is looked up: std calls `getaddrinfo` on the calling
/// thread, which freezes every task of the loop until the name server answers; copas runs
/// the lookup on the [`unblock`](copas_core::unblock) pool
/// ([`resolve`](copas_core::resolve)), suspending only the calling task. Literal IP
/// addresses are parsed in place and cost no lookup.
///
/// # Examples
/// ```
/// use copas_net::ToSocketAddrs;
/// let addrs: Vec<_> = "127.0.0.1:7000".to_socket_addrs()?.collect();
/// assert_eq!(addrs, ["127.0.0.1:7000".parse().unwrap()]);
/// let addrs: Vec<_> = ("::1", 80).to_socket_addrs()?.collect();
/// assert_eq!(addrs, ["[::1]:80".parse().unwrap()]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait ToSocketAddrs {
    /// The addresses, in the order the resolver gave them.
    ///
    /// # Errors
    /// `InvalidInput` for a string that is neither an address nor `HOST:PORT`; the
    /// resolver's error for a name that does not resolve; the cancellation error or
    /// `TimedOut` (under [`with_timeout`](copas_core::with_timeout)) while a lookup runs.
    fn to_socket_addrs(&self) -> io::Result<Addrs>;
}

/// The addresses a [`ToSocketAddrs`] value names: an iterator of `SocketAddr`.
#[derive(Debug, Clone)]
pub struct Addrs(std::vec::IntoIter<SocketAddr>);

impl Addrs {
    fn one(a: SocketAddr) -> Addrs {
        Addrs(vec![a].into_iter())
    }

    /// The addresses not yet taken from the iterator.
    pub fn as_slice(&self) -> &[SocketAddr] {
        self.0.as_slice()
    }
}

impl Iterator for Addrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ToSocketAddrs for SocketAddr {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs::one(*self))
    }
}

impl ToSocketAddrs for SocketAddrV4 {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs::one((*self).into()))
    }
}

impl ToSocketAddrs for SocketAddrV6 {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs::one((*self).into()))
    }
}

impl ToSocketAddrs for (IpAddr, u16) {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs::one((*self).into()))
    }
}

impl ToSocketAddrs for (Ipv4Addr, u16) {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs::one((*self).into()))
    }
}

impl ToSocketAddrs for (Ipv6Addr, u16) {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs::one((*self).into()))
    }
}

impl ToSocketAddrs for (&str, u16) {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        let (host, port) = *self;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Addrs::one((ip, port).into()));
        }
        lookup(&format!("{host}:{port}"))
    }
}

impl ToSocketAddrs for (String, u16) {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        (self.0.as_str(), self.1).to_socket_addrs()
    }
}

impl ToSocketAddrs for str {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        if let Ok(a) = self.parse::<SocketAddr>() {
            return Ok(Addrs::one(a));
        }
        // What std would refuse without a lookup gets the same error without one.
        if self
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("copas: '{self}' is not HOST:PORT"),
            ));
        }
        lookup(self)
    }
}

impl ToSocketAddrs for String {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        self.as_str().to_socket_addrs()
    }
}

impl ToSocketAddrs for [SocketAddr] {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs(Vec::from(self).into_iter()))
    }
}

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {
    fn to_socket_addrs(&self) -> io::Result<Addrs> {
        (**self).to_socket_addrs()
    }
}

fn lookup(host_port: &str) -> io::Result<Addrs> {
    copas_core::resolve(host_port).map(|v| Addrs(v.into_iter()))
}
