//! UDP sockets and the UDP server form.

mod common;

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::guard;
use copas::UdpSocket;

#[test]
fn udp_server_echoes_to_many_clients() {
    guard(|| {
        let server = copas::add_udp_server("127.0.0.1:0", |sock, data, from| {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(data);
            sock.send_to(&reply, from).map(drop)
        })
        .unwrap();
        let addr = server.local_addr();
        let clients: Vec<_> = (0..20)
            .map(|i| {
                copas::spawn(move || -> io::Result<Vec<u8>> {
                    let s = UdpSocket::bind("127.0.0.1:0")?;
                    s.set_read_timeout(Some(common::HANG_GUARD))?;
                    s.connect(addr)?;
                    s.send(format!("client {i}").as_bytes())?;
                    let mut buf = [0u8; 64];
                    let n = s.recv(&mut buf)?;
                    Ok(buf[..n].to_vec())
                })
            })
            .collect();
        let s = server.clone();
        let stopper = copas::spawn(move || {
            for c in clients {
                c.join().unwrap().unwrap();
            }
            s.stop();
        });
        copas::run().unwrap();
        stopper.join().unwrap();
        assert!(server.is_stopped());
    });
}

#[test]
fn udp_replies_are_each_clients_own() {
    guard(|| {
        let server = copas::add_udp_server("127.0.0.1:0", |sock, data, from| {
            sock.send_to(data, from).map(drop)
        })
        .unwrap();
        let addr = server.local_addr();
        let h = copas::spawn(move || -> io::Result<Vec<String>> {
            let mut got = Vec::new();
            let a = UdpSocket::bind("127.0.0.1:0")?;
            let b = UdpSocket::bind("127.0.0.1:0")?;
            a.send_to(b"from a", addr)?;
            b.send_to(b"from b", addr)?;
            let mut buf = [0u8; 32];
            for s in [&a, &b] {
                let (n, from) = s.recv_from(&mut buf)?;
                assert_eq!(from, addr);
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            server.stop();
            Ok(got)
        });
        copas::run().unwrap();
        assert_eq!(h.join().unwrap().unwrap(), ["from a", "from b"]);
    });
}

#[test]
fn udp_read_timeout_not_before_deadline() {
    guard(|| {
        let h = copas::spawn(|| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(25))).unwrap();
            let start = Instant::now();
            let mut buf = [0u8; 8];
            let e = s.recv_from(&mut buf).unwrap_err();
            (e.kind(), start.elapsed())
        });
        let (kind, waited) = h.join().unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(waited >= Duration::from_millis(25), "{waited:?}");
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            s.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    });
}

/// At most one task waits to receive on a socket: a second one gets a clear error, not a
/// hang.
#[test]
fn second_waiting_receiver_gets_resource_busy() {
    guard(|| {
        let sock = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let addr = sock.local_addr().unwrap();
        let s1 = sock.clone();
        let first = copas::spawn(move || {
            let mut buf = [0u8; 8];
            s1.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec())
        });
        let s2 = sock.clone();
        let second = copas::spawn(move || {
            let mut buf = [0u8; 8];
            s2.recv_from(&mut buf).map(|(n, _)| n)
        });
        let err = second.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"one", addr).unwrap();
        assert_eq!(first.join().unwrap().unwrap(), b"one");
    });
}

#[test]
fn connected_udp_send_without_peer_is_not_connected() {
    guard(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Linux says EDESTADDRREQ: an error, not a hang.
        assert!(s.send(b"x").is_err());
        assert_eq!(
            s.peer_addr().unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
    });
}
