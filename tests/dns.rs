//! Host names are resolved off the loop: `TcpStream::connect`, `connect_timeout` and
//! `UdpSocket` calls given a name run the lookup on the `unblock` pool (whose worker threads
//! are named `copas-unblock`), and literal IP addresses never reach the resolver.
//!
//! This file holds one test so that no other test of the process starts pool workers.

use std::io::Write;
use std::time::Duration;

use copas::{TcpStream, UdpSocket};

/// Whether a thread named `copas-unblock` exists in this process.
fn unblock_worker_exists() -> bool {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(Result::ok)
        .any(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "copas-unblock")
        })
}

#[test]
fn names_are_resolved_on_the_pool_and_ip_literals_not_at_all() {
    let server = copas::add_server("127.0.0.1:0", |mut c: TcpStream| {
        while let Some(line) = c.receive_line()? {
            c.send(&line)?;
            c.send(b"\n")?;
        }
        Ok(())
    })
    .unwrap();
    let port = server.local_addr().port();
    let udp_peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp_peer.local_addr().unwrap().port();
    let client = copas::spawn(move || -> std::io::Result<()> {
        // Literal addresses, in every form: no lookup, so no pool worker.
        let mut a = TcpStream::connect(format!("127.0.0.1:{port}"))?;
        let _b = TcpStream::connect(("127.0.0.1", port))?;
        // std's form, `&SocketAddr`, still works.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _c = TcpStream::connect_timeout(
            &format!("127.0.0.1:{port}")
                .parse::<std::net::SocketAddr>()
                .unwrap(),
            Duration::from_secs(10),
        )?;
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        udp.send_to(b"ip", format!("127.0.0.1:{udp_port}"))?;
        assert!(
            !unblock_worker_exists(),
            "a literal address reached the resolver"
        );
        a.write_all(b"literal\n")?;
        assert_eq!(&a.receive_line()?.unwrap()[..], b"literal");

        // A host name: looked up on the pool.
        let mut n = TcpStream::connect(("localhost", port))?;
        assert!(
            unblock_worker_exists(),
            "the name was not resolved on the pool"
        );
        n.write_all(b"by name\n")?;
        assert_eq!(&n.receive_line()?.unwrap()[..], b"by name");
        let mut t =
            TcpStream::connect_timeout(format!("localhost:{port}"), Duration::from_secs(10))?;
        t.write_all(b"with a timeout\n")?;
        assert_eq!(&t.receive_line()?.unwrap()[..], b"with a timeout");
        udp.send_to(b"name", ("localhost", udp_port))?;
        udp.connect(format!("localhost:{udp_port}"))?;
        udp.send(b"connected")?;

        // Not HOST:PORT at all: refused without a lookup.
        let bad = TcpStream::connect("no port here").unwrap_err();
        assert_eq!(bad.kind(), std::io::ErrorKind::InvalidInput);
        server.stop();
        Ok(())
    });
    copas::run().unwrap();
    client.join().unwrap().unwrap();
    let mut buf = [0u8; 16];
    for want in [&b"ip"[..], b"name", b"connected"] {
        let n = udp_peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
}
