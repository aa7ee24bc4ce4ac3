//! The examples on the command line, run as child processes: `--help` prints usage and
//! exits 0, a bad option prints a sentence and exits 2, a busy port prints
//! "NAME: cannot listen on ADDR: address in use" and exits 1.

#[path = "../examples/support/child.rs"]
mod child;

/// Every example, and the options it needs besides `--addr` to get as far as listening.
const SERVERS: &[(&str, &[&str])] = &[
    ("echo", &[]),
    ("echo_threads", &[]),
    ("http", &[]),
    ("http_threads", &[]),
    ("chat", &[]),
    ("kv", &[]),
    ("proxy", &["--upstream", "127.0.0.1:9"]),
    ("pipeline", &[]),
];
const OTHERS: &[&str] = &["timers", "many_tasks"];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_prints_usage_and_exits_0() {
    for name in SERVERS
        .iter()
        .map(|(n, _)| *n)
        .chain(OTHERS.iter().copied())
    {
        for flag in ["--help", "-h"] {
            let out = child::run(name, &[flag]);
            assert_eq!(out.status.code(), Some(0), "{name} {flag}: {out:?}");
            let stdout = text(&out.stdout);
            assert!(
                stdout.starts_with(&format!("Usage: {name}")),
                "{name} {flag} printed {stdout:?}"
            );
            if SERVERS.iter().any(|(n, _)| *n == name) {
                assert!(stdout.contains("--addr HOST:PORT"), "{name}: {stdout}");
            }
            assert!(out.stderr.is_empty(), "{name}: {}", text(&out.stderr));
        }
    }
}

#[test]
fn unknown_option_is_a_sentence_and_exit_2() {
    for name in SERVERS
        .iter()
        .map(|(n, _)| *n)
        .chain(OTHERS.iter().copied())
    {
        let out = child::run(name, &["--bogus"]);
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("{name}: unknown option '--bogus'\n")),
            "{name}: {stderr:?}"
        );
        assert!(stderr.contains("--help"), "{name}: {stderr:?}");
    }
}

#[test]
fn bad_option_values_exit_2() {
    for (name, extra) in SERVERS {
        for args in [
            &["--addr"][..],
            &["--addr", "no-port"],
            &["--addr", "h:99999"],
        ] {
            let mut all: Vec<&str> = extra.to_vec();
            all.extend_from_slice(args);
            let out = child::run(name, &all);
            assert_eq!(out.status.code(), Some(2), "{name} {all:?}: {out:?}");
            let stderr = text(&out.stderr);
            assert!(
                stderr.starts_with(&format!("{name}: option '--addr'")),
                "{stderr:?}"
            );
        }
        let out = child::run(name, &["surplus"]);
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        assert!(text(&out.stderr).contains("unexpected argument 'surplus'"));
    }
    let out = child::run("proxy", &["--addr", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).starts_with("proxy: option '--upstream' is required\n"));
    let out = child::run("many_tasks", &["lots"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).starts_with("many_tasks: N must be a number, not 'lots'\n"));
    let out = child::run("kv", &["--max-request", "big"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).starts_with("kv: option '--max-request' wants a number"));
}

#[test]
fn busy_port_is_a_sentence_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (name, extra) in SERVERS {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend_from_slice(&["--addr", &addr]);
        let out = child::run(name, &args);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        assert_eq!(
            text(&out.stderr),
            format!("{name}: cannot listen on {addr}: address in use\n"),
            "{name}"
        );
        assert!(out.stdout.is_empty(), "{name}: {}", text(&out.stdout));
    }
}

#[test]
fn servers_start_on_a_free_port() {
    for (name, extra) in SERVERS {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend_from_slice(&["--addr", "127.0.0.1:0"]);
        let mut server = child::Server::start(name, &args);
        assert_ne!(server.addr.port(), 0, "{name}");
        std::net::TcpStream::connect(server.addr).expect("the server accepts");
        assert!(server.is_running(), "{name}");
    }
}

/// `--threads 2`: both threads' listeners share the port, and every client is echoed
/// whichever thread the kernel hands it to.
#[test]
fn echo_and_http_serve_on_two_threads() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut echo = child::Server::start("echo", &["--addr", "127.0.0.1:0", "--threads", "2"]);
    for i in 0..40 {
        let mut c = std::net::TcpStream::connect(echo.addr).expect("echo accepts");
        writeln!(c, "line {i}").unwrap();
        let mut got = String::new();
        BufReader::new(&c).read_line(&mut got).unwrap();
        assert_eq!(got, format!("line {i}\n"));
    }
    assert!(echo.is_running());
    let mut http = child::Server::start("http", &["--addr", "127.0.0.1:0", "--threads", "2"]);
    let mut c = std::net::TcpStream::connect(http.addr).expect("http accepts");
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(got.ends_with("Hello, World!"), "{got}");
    assert!(http.is_running());
}

#[test]
fn zero_threads_is_a_usage_error() {
    let out = child::run("echo", &["--threads", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("'--threads' wants at least 1"));
}

/// The pipeline example answers each batch with `sort | uniq -c | sort -rn`'s output and a
/// `.` line, while a second client that has sent only half a batch waits.
#[test]
fn pipeline_sorts_and_counts_a_batch() {
    use std::io::{BufRead, BufReader, Write};
    let mut server = child::Server::start("pipeline", &["--addr", "127.0.0.1:0"]);
    let mut idle = std::net::TcpStream::connect(server.addr).expect("pipeline accepts");
    idle.write_all(b"half a batch\n").unwrap();
    let mut c = std::net::TcpStream::connect(server.addr).expect("pipeline accepts");
    c.write_all(b"b\na\nb\nc\nb\na\n\n").unwrap();
    let mut lines = BufReader::new(&c).lines();
    let mut got = Vec::new();
    loop {
        let line = lines.next().expect("a line").unwrap();
        if line == "." {
            break;
        }
        got.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    assert_eq!(got, ["3 b", "2 a", "1 c"]);
    assert!(server.is_running());
}
