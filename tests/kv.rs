//! `examples/kv.rs`, the Redis-protocol server, run as a child process and driven with raw
//! RESP over std sockets and with the real `redis-cli` (skipped, with a notice, when it is
//! not installed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../examples/support/child.rs"]
mod child;

fn kv(args: &[&str]) -> child::Server {
    let mut all = vec!["--addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    child::Server::start("kv", &all)
}

#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

use Reply::*;

fn bulk(s: &str) -> Reply {
    Bulk(Some(s.as_bytes().to_vec()))
}

fn ok() -> Reply {
    Simple("OK".into())
}

fn err(s: &str) -> Reply {
    Error(s.into())
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    #[track_caller]
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn send_raw(&mut self, data: &[u8]) {
        self.writer.write_all(data).unwrap();
    }

    fn send(&mut self, args: &[&[u8]]) {
        let r = encode(args);
        self.send_raw(&r);
    }

    #[track_caller]
    fn read(&mut self) -> Reply {
        read_reply(&mut self.reader).expect("a reply")
    }

    #[track_caller]
    fn cmd(&mut self, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&args);
        self.read()
    }

    /// The server closed the connection: EOF (or a reset) on the next read.
    #[track_caller]
    fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "more bytes after the error: {rest:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut r = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        r.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        r.extend_from_slice(a);
        r.extend_from_slice(b"\r\n");
    }
    r
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.ends_with("\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("incomplete reply line {line:?}"),
        ));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(1);
    Ok(match kind {
        "+" => Simple(rest.into()),
        "-" => Error(rest.into()),
        ":" => Int(rest.parse().unwrap()),
        "$" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                Bulk(None)
            } else {
                let mut data = vec![0; n as usize + 2];
                r.read_exact(&mut data)?;
                assert_eq!(&data[n as usize..], b"\r\n");
                data.truncate(n as usize);
                Bulk(Some(data))
            }
        }
        "*" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                Array(None)
            } else {
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Array(Some(items))
            }
        }
        _ => panic!("not a RESP reply: {line:?}"),
    })
}

/// The strings of an array reply (KEYS), sorted.
#[track_caller]
fn sorted(reply: Reply) -> Vec<String> {
    let Array(Some(items)) = reply else {
        panic!("not an array: {reply:?}")
    };
    let mut v: Vec<String> = items
        .into_iter()
        .map(|i| match i {
            Bulk(Some(b)) => String::from_utf8(b).unwrap(),
            other => panic!("not a string: {other:?}"),
        })
        .collect();
    v.sort();
    v
}

#[test]
fn strings_counters_and_keys() {
    let server = kv(&[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.cmd(&["PING"]), Simple("PONG".into()));
    assert_eq!(c.cmd(&["ping", "hi"]), bulk("hi"));
    assert_eq!(c.cmd(&["ECHO", "a\r\nb"]), bulk("a\r\nb"));
    assert_eq!(c.cmd(&["GET", "k"]), Bulk(None));
    assert_eq!(c.cmd(&["SET", "k", "v1"]), ok());
    assert_eq!(c.cmd(&["get", "k"]), bulk("v1"));
    assert_eq!(c.cmd(&["SET", "k", "v2", "NX"]), Bulk(None));
    assert_eq!(c.cmd(&["SET", "other", "x", "XX"]), Bulk(None));
    assert_eq!(c.cmd(&["SET", "k", "v3", "XX"]), ok());
    assert_eq!(c.cmd(&["SET", "k", "v4", "GET"]), bulk("v3"));
    assert_eq!(c.cmd(&["GETSET", "k", "v5"]), bulk("v4"));
    assert_eq!(c.cmd(&["GETSET", "new", "n"]), Bulk(None));
    assert_eq!(c.cmd(&["EXISTS", "k", "new", "nope", "k"]), Int(3));
    assert_eq!(c.cmd(&["DEL", "new", "nope"]), Int(1));
    assert_eq!(c.cmd(&["INCR", "n"]), Int(1));
    assert_eq!(c.cmd(&["INCRBY", "n", "41"]), Int(42));
    assert_eq!(c.cmd(&["DECR", "n"]), Int(41));
    assert_eq!(c.cmd(&["DECRBY", "n", "-9"]), Int(50));
    assert_eq!(c.cmd(&["GET", "n"]), bulk("50"));
    assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2"]), ok());
    assert_eq!(
        c.cmd(&["MGET", "a", "missing", "b"]),
        Array(Some(vec![bulk("1"), Bulk(None), bulk("2")]))
    );
    assert_eq!(c.cmd(&["DBSIZE"]), Int(4));
    assert_eq!(sorted(c.cmd(&["KEYS", "*"])), ["a", "b", "k", "n"]);
    assert_eq!(
        c.cmd(&["MSET", "user:1", "x", "user:22", "y", "usr", "z"]),
        ok()
    );
    assert_eq!(sorted(c.cmd(&["KEYS", "user:?*"])), ["user:1", "user:22"]);
    // As in Redis, only `^` negates a class: `[!e]` is `!` or `e`.
    assert_eq!(c.cmd(&["KEYS", "u[!e]r"]), Array(Some(vec![])));
    assert_eq!(c.cmd(&["KEYS", "u[^e]r"]), Array(Some(vec![bulk("usr")])));
    assert_eq!(
        c.cmd(&["KEYS", "user:[0-1]"]),
        Array(Some(vec![bulk("user:1")]))
    );
    assert_eq!(
        c.cmd(&["KEYS", "[A-Z]sr"]),
        Array(Some(vec![])),
        "globs are case-sensitive"
    );
    assert_eq!(c.cmd(&["KEYS", "u\\sr"]), Array(Some(vec![bulk("usr")])));
    assert_eq!(c.cmd(&["KEYS", "*2*"]), Array(Some(vec![bulk("user:22")])));
    assert_eq!(c.cmd(&["KEYS", "*:*1"]), Array(Some(vec![bulk("user:1")])));
    assert_eq!(c.cmd(&["TYPE", "a"]), Simple("string".into()));
    assert_eq!(c.cmd(&["TYPE", "zzz"]), Simple("none".into()));
    assert_eq!(c.cmd(&["SELECT", "0"]), ok());
    assert_eq!(c.cmd(&["SELECT", "1"]), err("ERR DB index is out of range"));
    assert_eq!(c.cmd(&["FLUSHALL"]), ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Int(0));
    // Binary-safe keys and values.
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    c.send(&[b"SET", b"\x00\xff\r\n", &blob]);
    assert_eq!(c.read(), ok());
    c.send(&[b"GET", b"\x00\xff\r\n"]);
    assert_eq!(c.read(), Bulk(Some(blob)));
    // A value near the default 16 MiB limit, arriving in many reads.
    let large: Vec<u8> = (0..15 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    c.send(&[b"SET", b"large", &large]);
    assert_eq!(c.read(), ok());
    c.send(&[b"GET", b"large"]);
    assert_eq!(c.read(), Bulk(Some(large)));
    assert_eq!(c.cmd(&["QUIT"]), ok());
    c.assert_closed();
}

#[test]
fn lists_and_wrong_type() {
    let server = kv(&[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.cmd(&["RPUSH", "l", "b", "c"]), Int(2));
    assert_eq!(c.cmd(&["LPUSH", "l", "a"]), Int(3));
    assert_eq!(
        c.cmd(&["LRANGE", "l", "0", "-1"]),
        Array(Some(vec![bulk("a"), bulk("b"), bulk("c")]))
    );
    assert_eq!(c.cmd(&["LLEN", "l"]), Int(3));
    let wrong = err("WRONGTYPE Operation against a key holding the wrong kind of value");
    assert_eq!(c.cmd(&["GET", "l"]), wrong);
    assert_eq!(c.cmd(&["INCR", "l"]), wrong);
    assert_eq!(c.cmd(&["GETSET", "l", "x"]), wrong);
    assert_eq!(c.cmd(&["SET", "s", "x"]), ok());
    assert_eq!(c.cmd(&["LPUSH", "s", "x"]), wrong);
    assert_eq!(
        c.cmd(&["MGET", "l", "s"]),
        Array(Some(vec![Bulk(None), bulk("x")]))
    );
    assert_eq!(c.cmd(&["LPOP", "l"]), bulk("a"));
    assert_eq!(c.cmd(&["RPOP", "l"]), bulk("c"));
    assert_eq!(c.cmd(&["RPOP", "l"]), bulk("b"));
    assert_eq!(
        c.cmd(&["EXISTS", "l"]),
        Int(0),
        "an emptied list is deleted"
    );
    assert_eq!(c.cmd(&["SET", "l", "now a string"]), ok());
    assert_eq!(c.cmd(&["TYPE", "l"]), Simple("string".into()));
}

#[test]
fn errors_are_worded_as_redis_words_them() {
    let server = kv(&[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(
        c.cmd(&["FOO", "bar", "baz"]),
        err("ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' ")
    );
    assert_eq!(
        c.cmd(&["nope"]),
        err("ERR unknown command 'nope', with args beginning with: ")
    );
    assert_eq!(
        c.cmd(&["GET"]),
        err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        c.cmd(&["GET", "a", "b"]),
        err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        c.cmd(&["MSET", "a", "1", "b"]),
        err("ERR wrong number of arguments for 'mset' command")
    );
    let not_int = err("ERR value is not an integer or out of range");
    assert_eq!(c.cmd(&["SET", "s", "abc"]), ok());
    assert_eq!(c.cmd(&["INCR", "s"]), not_int);
    assert_eq!(c.cmd(&["INCRBY", "n", "1.5"]), not_int);
    assert_eq!(c.cmd(&["INCRBY", "n", " 1"]), not_int);
    assert_eq!(c.cmd(&["INCRBY", "n", "01"]), not_int);
    assert_eq!(c.cmd(&["INCRBY", "n", "99999999999999999999"]), not_int);
    assert_eq!(c.cmd(&["SET", "big", "9223372036854775807"]), ok());
    assert_eq!(
        c.cmd(&["INCR", "big"]),
        err("ERR increment or decrement would overflow")
    );
    assert_eq!(c.cmd(&["EXPIRE", "s", "soon"]), not_int);
    assert_eq!(c.cmd(&["SET", "s", "x", "EX", "ten"]), not_int);
    assert_eq!(c.cmd(&["SET", "s", "x", "BOGUS"]), err("ERR syntax error"));
    assert_eq!(
        c.cmd(&["SET", "s", "x", "NX", "XX"]),
        err("ERR syntax error")
    );
    assert_eq!(
        c.cmd(&["SET", "s", "x", "EX", "1", "PX", "1"]),
        err("ERR syntax error")
    );
    assert_eq!(c.cmd(&["SET", "s", "x", "EX"]), err("ERR syntax error"));
    assert_eq!(
        c.cmd(&["SET", "s", "x", "EX", "0"]),
        err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(
        c.cmd(&["SET", "s", "x", "EX", "9223372036854775807"]),
        err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(
        c.cmd(&["EXPIRE", "s", "9223372036854775807"]),
        err("ERR invalid expire time in 'expire' command")
    );
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "x", "y"]),
        err("ERR unknown subcommand 'SET'. Try CONFIG HELP.")
    );
    assert_eq!(c.cmd(&["FLUSHALL", "NOW"]), err("ERR syntax error"));
    // After all of these the connection is still fine.
    assert_eq!(c.cmd(&["GET", "s"]), bulk("abc"));
}

#[test]
fn expiry_is_lazy_and_active() {
    let server = kv(&[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.cmd(&["SET", "k", "v", "EX", "100"]), ok());
    assert_eq!(c.cmd(&["TTL", "k"]), Int(100));
    let Int(ms) = c.cmd(&["PTTL", "k"]) else {
        panic!()
    };
    assert!((99_000..=100_000).contains(&ms), "{ms}");
    assert_eq!(c.cmd(&["PERSIST", "k"]), Int(1));
    assert_eq!(c.cmd(&["PERSIST", "k"]), Int(0));
    assert_eq!(c.cmd(&["TTL", "k"]), Int(-1));
    assert_eq!(c.cmd(&["TTL", "missing"]), Int(-2));
    assert_eq!(c.cmd(&["EXPIRE", "missing", "10"]), Int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "50"]), Int(1));
    assert_eq!(c.cmd(&["SET", "k", "w", "KEEPTTL"]), ok());
    assert_eq!(c.cmd(&["TTL", "k"]), Int(50));
    assert_eq!(c.cmd(&["SET", "k", "w"]), ok());
    assert_eq!(c.cmd(&["TTL", "k"]), Int(-1), "SET drops the deadline");
    assert_eq!(c.cmd(&["EXPIRE", "k", "-1"]), Int(1));
    assert_eq!(c.cmd(&["EXISTS", "k"]), Int(0), "a past deadline deletes");

    // Lazy: a key touched after its deadline is gone.
    assert_eq!(c.cmd(&["SET", "short", "v", "PX", "30"]), ok());
    assert_eq!(c.cmd(&["INCR", "counter"]), Int(1));
    assert_eq!(c.cmd(&["PEXPIRE", "counter", "30"]), Int(1));
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(c.cmd(&["GET", "short"]), Bulk(None));
    assert_eq!(
        c.cmd(&["INCR", "counter"]),
        Int(1),
        "an expired counter starts over"
    );
    assert_eq!(c.cmd(&["TTL", "counter"]), Int(-1));

    // Active: keys nobody touches are reclaimed (DBSIZE counts keys not reclaimed yet).
    let mut pipeline = Vec::new();
    for i in 0..5000 {
        pipeline.extend(encode(&[
            b"SET",
            format!("t{i}").as_bytes(),
            b"v",
            b"PX",
            b"20",
        ]));
    }
    c.send_raw(&pipeline);
    for _ in 0..5000 {
        assert_eq!(c.read(), ok());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Int(n) = c.cmd(&["DBSIZE"]) else { panic!() };
        if n == 1 {
            break; // only "counter" is left
        }
        assert!(Instant::now() < deadline, "{n} keys still there");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pipelining_1000_deep_in_one_write_and_byte_by_byte() {
    let server = kv(&[]);
    let mut c = Client::connect(server.addr);
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend(encode(&[b"INCR", b"n"]));
        batch.extend(encode(&[
            b"SET",
            format!("k{i}").as_bytes(),
            format!("v{i}").as_bytes(),
        ]));
        batch.extend(encode(&[b"GET", format!("k{i}").as_bytes()]));
    }
    c.send_raw(&batch);
    for i in 0..1000 {
        assert_eq!(c.read(), Int(i + 1));
        assert_eq!(c.read(), ok());
        assert_eq!(c.read(), bulk(&format!("v{i}")));
    }
    // The same requests, one byte per write, mixed with inline ones.
    let mut slow = encode(&[b"SET", b"slow", b"value"]);
    slow.extend_from_slice(b"GET slow\r\nPING\n");
    slow.extend(encode(&[b"DEL", b"slow"]));
    c.writer.set_nodelay(true).unwrap();
    for b in &slow {
        c.send_raw(std::slice::from_ref(b));
    }
    assert_eq!(c.read(), ok());
    assert_eq!(c.read(), bulk("value"));
    assert_eq!(c.read(), Simple("PONG".into()));
    assert_eq!(c.read(), Int(1));
    // Empty arrays and blank inline lines get no reply.
    c.send_raw(b"*0\r\n*-1\r\n\r\n   \r\nPING\r\n");
    assert_eq!(c.read(), Simple("PONG".into()));
}

#[test]
fn inline_commands_with_quotes() {
    let server = kv(&[]);
    let mut c = Client::connect(server.addr);
    c.send_raw(b"SET \"a key\" 'it''s'\r\n");
    // 'it''s' is not a word: a closing quote must end it.
    assert_eq!(
        c.read(),
        err("ERR Protocol error: unbalanced quotes in request")
    );
    c.assert_closed();
    let mut c = Client::connect(server.addr);
    c.send_raw(b"SET \"a key\" \"x\\ty\\x41\\n\"\r\nGET \"a key\"\nGET 'a key'\r\n");
    assert_eq!(c.read(), ok());
    assert_eq!(c.read(), bulk("x\tyA\n"));
    assert_eq!(c.read(), bulk("x\tyA\n"));
    c.send_raw(b"  ping   \"hello world\"  \r\n");
    assert_eq!(c.read(), bulk("hello world"));
}

/// Sends `abuse` on a new connection and expects `error` then a close, while a client
/// connected before goes on being served, with its data intact.
#[track_caller]
fn abuse_closes_only_that_connection(server: &child::Server, abuse: &[u8], error: &str) {
    let mut good = Client::connect(server.addr);
    assert_eq!(good.cmd(&["SET", "precious", "data"]), ok());
    let mut bad = Client::connect(server.addr);
    bad.send_raw(abuse);
    assert_eq!(
        bad.read(),
        err(error),
        "for {:?}",
        String::from_utf8_lossy(&abuse[..abuse.len().min(40)])
    );
    bad.assert_closed();
    assert_eq!(good.cmd(&["GET", "precious"]), bulk("data"));
    assert_eq!(
        Client::connect(server.addr).cmd(&["PING"]),
        Simple("PONG".into())
    );
}

#[test]
fn protocol_abuse_closes_that_connection_only() {
    let server = kv(&["--max-request", "1048576"]);
    let cases: &[(&[u8], &str)] = &[
        (
            b"*99999999999\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*2000000\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (b"*12x\r\n", "ERR Protocol error: invalid multibulk length"),
        (
            b"*1\r\n$99999999999\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*1\r\n$2000000\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$3x\r\nGET\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\nGET\r\n",
            "ERR Protocol error: expected '$', got 'G'",
        ),
        (
            b"*1\r\n\x01GET\r\n",
            "ERR Protocol error: expected '$', got '\\x01'",
        ),
        (
            b"*1\r\n$3\r\nGETxx",
            "ERR Protocol error: bulk string not ended by CRLF",
        ),
        (
            b"*111111111111111111111111111111\r\n",
            "ERR Protocol error: too big mbulk count string",
        ),
    ];
    for (abuse, error) in cases {
        abuse_closes_only_that_connection(&server, abuse, error);
    }
    // Binary noise with no newline: past 64 KiB it is no inline request.
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .map(|b| if b == b'\n' || b == b'*' { b'x' } else { b })
        .collect();
    abuse_closes_only_that_connection(
        &server,
        &noise,
        "ERR Protocol error: too big inline request",
    );
    // Arguments that are each fine but together pass --max-request.
    let big = vec![b'a'; 600_000];
    let mut request = encode(&[b"MSET", &big, &big]);
    request.truncate(request.len() / 2 + 100);
    abuse_closes_only_that_connection(
        &server,
        &request,
        "ERR Protocol error: request larger than max-request (1048576 bytes)",
    );
    // Noise with newlines is a stream of unknown inline commands: answered, not fatal.
    let mut c = Client::connect(server.addr);
    c.send_raw(b"\x00\x01\x02\r\nGET\x7f\n");
    assert!(matches!(c.read(), Error(e) if e.starts_with("ERR unknown command '\x00\x01\x02'")));
    assert!(matches!(c.read(), Error(e) if e.starts_with("ERR unknown command 'GET\x7f'")));
    assert_eq!(c.cmd(&["PING"]), Simple("PONG".into()));
}

#[test]
fn a_request_announcing_a_huge_length_is_refused_before_it_is_buffered() {
    let server = kv(&[]);
    let before = server.rss_kib();
    // Thirty connections each announce 16 MiB (the default limit) and send 1 MiB of it:
    // each holds only what it sent, and closing them frees it.
    let mut conns = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777000\r\n")
            .unwrap();
        s.write_all(&vec![b'v'; 1 << 20]).unwrap();
        conns.push(s);
    }
    let mut c = Client::connect(server.addr);
    assert_eq!(c.cmd(&["PING"]), Simple("PONG".into()));
    let during = server.rss_kib();
    if before > 0 {
        assert!(
            during < before + 200 * 1024,
            "RSS grew from {before} to {during} KiB"
        );
    }
    for s in &conns {
        s.shutdown(Shutdown::Both).unwrap();
    }
    assert_eq!(c.cmd(&["EXISTS", "k"]), Int(0));
}

fn redis_cli() -> Option<&'static str> {
    let found = Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("NOTICE: redis-cli is not installed; skipping the redis-cli test (apt-get install redis-tools)");
    }
    found.then_some("redis-cli")
}

#[test]
fn the_real_redis_cli_works() {
    let Some(cli) = redis_cli() else { return };
    let server = kv(&[]);
    let port = server.addr.port().to_string();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(cli);
        cmd.args(["-h", "127.0.0.1", "-p", &port]).args(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&["PING"], None), "PONG\n");
    assert_eq!(run(&["SET", "greeting", "hello world"], None), "OK\n");
    assert_eq!(run(&["GET", "greeting"], None), "hello world\n");
    assert_eq!(run(&["INCR", "visits"], None), "1\n");
    assert_eq!(
        run(&["INCR", "greeting"], None),
        "ERR value is not an integer or out of range\n\n"
    );
    assert_eq!(run(&["--no-raw", "GET", "missing"], None), "(nil)\n");
    assert_eq!(
        run(&["--no-raw", "MGET", "greeting", "visits"], None),
        "1) \"hello world\"\n2) \"1\"\n"
    );
    // Several commands from stdin, as a user would type them.
    assert_eq!(
        run(
            &[],
            Some("SET a 1\nINCRBY a 10\nRPUSH l x y\nLRANGE l 0 -1\nDBSIZE\n")
        ),
        "OK\n11\n2\nx\ny\n4\n"
    );
    // --pipe sends everything at once and counts the replies.
    let mut mass = String::new();
    for i in 0..2000 {
        mass.push_str(&format!(
            "*3\r\n$3\r\nSET\r\n${}\r\nkey{i}\r\n$1\r\nv\r\n",
            3 + i.to_string().len()
        ));
    }
    let out = run(&["--pipe"], Some(&mass));
    assert!(out.contains("errors: 0, replies: 2000"), "{out}");
    assert_eq!(run(&["DBSIZE"], None), "2004\n");
    assert_eq!(run(&["CLIENT", "SETNAME", "tester"], None), "OK\n");
    assert_eq!(
        run(&["CONFIG", "GET", "appendonly"], None),
        "appendonly\nno\n"
    );
    assert!(run(&["COMMAND", "DOCS", "get"], None).starts_with("get\nsummary\n"));
    assert_eq!(run(&["FLUSHALL"], None), "OK\n");
}
