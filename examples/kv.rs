//! A Redis-protocol (RESP2) key-value server on copas: one task per connection, one
//! store shared by all of them on the one thread. `redis-cli` and `redis-benchmark` work
//! against it.
//!
//! ```text
//! cargo run --release --example kv                          # 127.0.0.1:6380
//! redis-cli -p 6380 set greeting hello
//! redis-benchmark -p 6380 -t ping_mbulk,set,get -c 50 -P 16
//! ```
//!
//! Commands: PING ECHO GET SET (EX PX NX XX KEEPTTL GET) GETSET DEL EXISTS INCR DECR
//! INCRBY DECRBY MGET MSET EXPIRE PEXPIRE TTL PTTL PERSIST TYPE DBSIZE FLUSHALL KEYS
//! (glob) SELECT (0 only) QUIT CONFIG GET CLIENT (SETNAME GETNAME ID) COMMAND (COUNT INFO
//! DOCS), and LPUSH RPUSH LPOP RPOP LLEN LRANGE so that keys can hold a second type.
//! Errors are worded as Redis words them.
//!
//! Requests come as RESP arrays of bulk strings or as inline (telnet) lines, pipelined to
//! any depth: every complete request buffered is parsed in place from the stream's buffer
//! and answered, and the answers of a batch leave in one write.
//!
//! Limits (Redis's `proto-max-bulk-len` and query-buffer limit, in one): a request, all of
//! its arguments together, may be at most `--max-request` bytes (default 16 MiB); an inline
//! request at most 64 KiB; an array at most 1,048,576 elements. A request past a limit, a
//! malformed length or anything else that is not RESP gets a `-ERR Protocol error: ...`
//! and its connection is closed; the others go on. So a connection holds at most one
//! request plus 64 KiB of replies.
//!
//! Expiry is lazy (a key past its deadline is deleted when touched) and active: a timer
//! deletes at most 1,000 expired keys per run, every 100 ms, or after 1 ms while more are
//! due.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, BufRead};
use std::rc::Rc;
use std::time::{Duration, Instant};

use copas::TcpStream;

#[path = "support/cli.rs"]
mod cli;

use cli::Args;

const USAGE: &str = "\
Usage: kv [--addr HOST:PORT] [--max-request BYTES]

A Redis-protocol (RESP2) key-value server on copas.

Options:
  --addr HOST:PORT       address to listen on (default 127.0.0.1:6380)
  --max-request BYTES    largest request accepted, all arguments together
                         (default 16777216); larger ones close the connection
  -h, --help             print this help
";

/// The default of `--max-request`, like Redis's `proto-max-bulk-len` (512 MB there).
const DEFAULT_MAX_REQUEST: usize = 16 * 1024 * 1024;
/// The longest inline request (Redis: `PROTO_INLINE_MAX_SIZE`).
const MAX_INLINE: usize = 64 * 1024;
/// The most elements a request array may announce.
const MAX_ARGS: usize = 1024 * 1024;
/// A length line (`*3`, `$16`) longer than this cannot hold a valid number.
const MAX_LENGTH_LINE: usize = 24;
/// Replies buffered before they are sent, so a deep pipeline does not pile them up.
const REPLY_FLUSH: usize = 64 * 1024;
/// Active expiry: keys deleted per run, and the pause between runs.
const EXPIRE_BATCH: usize = 1000;
const EXPIRE_PERIOD: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------
// Request parsing

/// What the parser found at the front of the input.
enum Parsed {
    /// A complete request of this many bytes; its arguments are in `Parser::spans`
    /// (offsets into the input) or, for an inline request, in `Parser::inline`.
    Request { len: usize, inline: bool },
    /// An empty request (`*0`, `*-1`, a blank line) of this many bytes: no reply.
    Empty(usize),
    /// More input is needed.
    Partial,
    /// Not RESP: reply with this error and close.
    Error(String),
}

/// A RESP request parser that resumes where it stopped when a request arrives in pieces,
/// so a large request is scanned once. Invariant: between calls the input is only ever
/// appended to, never consumed, while a request is in progress (`pos > 0`).
#[derive(Default)]
struct Parser {
    /// Elements announced by the array header (valid while `pos > 0`).
    want: usize,
    /// Where parsing resumes: 0 at the start of a request.
    pos: usize,
    /// The arguments: (start, end) offsets into the input or into `inline`.
    spans: Vec<(usize, usize)>,
    /// Unquoted inline arguments.
    inline: Vec<u8>,
    max_request: usize,
}

/// A length line that is not a number ended by `\r\n`.
enum BadLength {
    /// Longer than any number can be.
    TooLong,
    Invalid,
}

/// Parses a length line at the front of `buf` (after its `*` or `$`): `Ok(None)` if it is
/// incomplete, else the number and the bytes used, `\r\n` included.
fn length_line(buf: &[u8]) -> Result<Option<(i64, usize)>, BadLength> {
    let Some(cr) = buf.iter().take(MAX_LENGTH_LINE).position(|&b| b == b'\r') else {
        return if buf.len() >= MAX_LENGTH_LINE {
            Err(BadLength::TooLong)
        } else {
            Ok(None)
        };
    };
    if buf.len() < cr + 2 {
        return Ok(None);
    }
    if buf[cr + 1] != b'\n' {
        return Err(BadLength::Invalid);
    }
    parse_int(&buf[..cr])
        .map(|n| Some((n, cr + 2)))
        .ok_or(BadLength::Invalid)
}

impl Parser {
    fn new(max_request: usize) -> Parser {
        Parser {
            max_request,
            ..Parser::default()
        }
    }

    fn parse(&mut self, buf: &[u8]) -> Parsed {
        if self.pos == 0 {
            match buf.first() {
                None => return Parsed::Partial,
                Some(b'*') => {}
                Some(_) => return self.parse_inline(buf),
            }
            let (n, used) = match length_line(&buf[1..]) {
                Ok(Some(v)) => v,
                Ok(None) => return Parsed::Partial,
                Err(BadLength::TooLong) => return protocol_error("too big mbulk count string"),
                Err(BadLength::Invalid) => return protocol_error("invalid multibulk length"),
            };
            if n <= 0 {
                return Parsed::Empty(1 + used);
            }
            if n as u64 > MAX_ARGS as u64 {
                return protocol_error("invalid multibulk length");
            }
            self.want = n as usize;
            self.pos = 1 + used;
            self.spans.clear();
        }
        while self.spans.len() < self.want {
            let rest = &buf[self.pos..];
            match rest.first() {
                None => return Parsed::Partial,
                Some(b'$') => {}
                Some(&other) => {
                    self.pos = 0;
                    return protocol_error(&format!("expected '$', got '{}'", shown(other)));
                }
            }
            let (n, used) = match length_line(&rest[1..]) {
                Ok(Some(v)) => v,
                Ok(None) => return Parsed::Partial,
                Err(e) => {
                    self.pos = 0;
                    return protocol_error(match e {
                        BadLength::TooLong => "too big bulk count string",
                        BadLength::Invalid => "invalid bulk length",
                    });
                }
            };
            let start = self.pos + 1 + used;
            let end = match usize::try_from(n) {
                Ok(n) if n <= self.max_request => start + n,
                _ => {
                    self.pos = 0;
                    return protocol_error("invalid bulk length");
                }
            };
            if end + 2 > self.max_request {
                self.pos = 0;
                return protocol_error(&format!(
                    "request larger than max-request ({} bytes)",
                    self.max_request
                ));
            }
            if buf.len() < end + 2 {
                return Parsed::Partial;
            }
            if &buf[end..end + 2] != b"\r\n" {
                self.pos = 0;
                return protocol_error("bulk string not ended by CRLF");
            }
            self.spans.push((start, end));
            self.pos = end + 2;
        }
        let len = std::mem::take(&mut self.pos);
        Parsed::Request { len, inline: false }
    }

    /// An inline request: one line of words, `"..."` (with `\n`, `\xff`, ... escapes) and
    /// `'...'` quoting as redis-cli and Redis accept.
    fn parse_inline(&mut self, buf: &[u8]) -> Parsed {
        let window = &buf[..buf.len().min(MAX_INLINE + 1)];
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_INLINE {
                protocol_error("too big inline request")
            } else {
                Parsed::Partial
            };
        };
        let line = &buf[..nl];
        self.spans.clear();
        self.inline.clear();
        if split_inline(line, &mut self.inline, &mut self.spans).is_err() {
            return protocol_error("unbalanced quotes in request");
        }
        if self.spans.is_empty() {
            Parsed::Empty(nl + 1)
        } else {
            Parsed::Request {
                len: nl + 1,
                inline: true,
            }
        }
    }
}

fn protocol_error(what: &str) -> Parsed {
    Parsed::Error(format!("ERR Protocol error: {what}"))
}

/// A byte as it may appear in an error line.
fn shown(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        (b as char).to_string()
    } else {
        format!("\\x{b:02x}")
    }
}

/// Splits an inline line into words, unquoting into `out`; `Err` for unbalanced quotes.
fn split_inline(line: &[u8], out: &mut Vec<u8>, spans: &mut Vec<(usize, usize)>) -> Result<(), ()> {
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        let start = out.len();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(()),
                        Some(b'"') => break,
                        Some(b'\\')
                            if i + 3 < line.len()
                                && line[i + 1] == b'x'
                                && line[i + 2].is_ascii_hexdigit()
                                && line[i + 3].is_ascii_hexdigit() =>
                        {
                            let hex = std::str::from_utf8(&line[i + 2..i + 4]).map_err(|_| ())?;
                            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                            i += 4;
                            continue;
                        }
                        Some(b'\\') if i + 1 < line.len() => {
                            out.push(match line[i + 1] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                other => other,
                            });
                            i += 2;
                            continue;
                        }
                        Some(&b) => out.push(b),
                    }
                    i += 1;
                }
                i += 1; // the closing quote, which must end the word
                if i < line.len() && !line[i].is_ascii_whitespace() {
                    return Err(());
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(()),
                        Some(b'\'') => break,
                        Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                            out.push(b'\'');
                            i += 2;
                            continue;
                        }
                        Some(&b) => out.push(b),
                    }
                    i += 1;
                }
                i += 1;
                if i < line.len() && !line[i].is_ascii_whitespace() {
                    return Err(());
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    out.push(line[i]);
                    i += 1;
                }
            }
        }
        spans.push((start, out.len()));
    }
}

/// Redis's strict integer syntax: optional `-`, digits, no leading zeros, no spaces or
/// `+`, within `i64`.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !neg => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// The arguments of one request, borrowed from the input (or the unquoted inline line).
#[derive(Clone, Copy)]
struct Argv<'a> {
    base: &'a [u8],
    spans: &'a [(usize, usize)],
}

impl<'a> Argv<'a> {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn get(&self, i: usize) -> &'a [u8] {
        let (s, e) = self.spans[i];
        &self.base[s..e]
    }

    fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

// ---------------------------------------------------------------------------------------
// Replies

/// RESP2 replies appended to a connection's output.
struct Out(Vec<u8>);

impl Out {
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    fn ok(&mut self) {
        self.raw(b"+OK\r\n");
    }

    fn simple(&mut self, s: &str) {
        self.raw(b"+");
        self.raw(s.as_bytes());
        self.raw(b"\r\n");
    }

    /// An error line; CR and LF in it (from user data) become spaces.
    fn error(&mut self, msg: &str) {
        self.raw(b"-");
        self.0.extend(
            msg.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.raw(b"\r\n");
    }

    fn number(&mut self, n: i64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            self.raw(b"-");
        }
        self.raw(&buf[i..]);
    }

    fn int(&mut self, n: i64) {
        self.raw(b":");
        self.number(n);
        self.raw(b"\r\n");
    }

    fn bulk(&mut self, data: &[u8]) {
        self.raw(b"$");
        self.number(data.len() as i64);
        self.raw(b"\r\n");
        self.raw(data);
        self.raw(b"\r\n");
    }

    fn nil(&mut self) {
        self.raw(b"$-1\r\n");
    }

    fn array(&mut self, n: usize) {
        self.raw(b"*");
        self.number(n as i64);
        self.raw(b"\r\n");
    }

    fn wrong_type(&mut self) {
        self.error("WRONGTYPE Operation against a key holding the wrong kind of value");
    }

    fn not_integer(&mut self) {
        self.error("ERR value is not an integer or out of range");
    }

    fn syntax(&mut self) {
        self.error("ERR syntax error");
    }
}

// ---------------------------------------------------------------------------------------
// The store

enum Value {
    Str(Vec<u8>),
    List(VecDeque<Vec<u8>>),
}

struct Entry {
    value: Value,
    /// Deadline in milliseconds of `Db::clock`, 0 for none.
    expires: u64,
}

/// The keyspace, shared by every connection. Invariant: `expiring` holds exactly the
/// (deadline, key) pairs of the entries with a deadline.
struct Db {
    map: HashMap<Rc<[u8]>, Entry>,
    expiring: BTreeSet<(u64, Rc<[u8]>)>,
    epoch: Instant,
}

impl Db {
    fn new() -> Db {
        Db {
            map: HashMap::new(),
            expiring: BTreeSet::new(),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the store was made, from 1 (0 means "no deadline").
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Deletes `key` if it is past its deadline (lazy expiry). Cheap when no key has one.
    fn expire_if_due(&mut self, key: &[u8]) {
        if self.expiring.is_empty() {
            return;
        }
        let due = matches!(self.map.get(key), Some(e) if e.expires != 0 && e.expires <= self.now());
        if due {
            self.remove(key);
        }
    }

    fn get(&mut self, key: &[u8]) -> Option<&Entry> {
        self.expire_if_due(key);
        self.map.get(key)
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.expire_if_due(key);
        self.map.get_mut(key)
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        match self.map.remove_entry(key) {
            Some((k, e)) => {
                if e.expires != 0 {
                    self.expiring.remove(&(e.expires, k));
                }
                true
            }
            None => false,
        }
    }

    /// Sets `key`'s deadline (0: none) on an existing entry.
    fn set_deadline(&mut self, key: &[u8], deadline: u64) {
        let Some((k, e)) = self.map.get_key_value(key) else {
            return;
        };
        let (k, old) = (k.clone(), e.expires);
        if old != 0 {
            self.expiring.remove(&(old, k.clone()));
        }
        if deadline != 0 {
            self.expiring.insert((deadline, k));
        }
        if let Some(e) = self.map.get_mut(key) {
            e.expires = deadline;
        }
    }

    /// Stores a string, dropping any deadline unless `keep_ttl`; reuses the old value's
    /// allocation when it fits.
    fn set(&mut self, key: &[u8], value: &[u8], keep_ttl: bool) {
        match self.map.get_mut(key) {
            Some(e) => {
                match &mut e.value {
                    Value::Str(v)
                        if v.capacity() >= value.len() && v.capacity() <= 2 * value.len() + 64 =>
                    {
                        v.clear();
                        v.extend_from_slice(value);
                    }
                    other => *other = Value::Str(value.to_vec()),
                }
                if !keep_ttl && e.expires != 0 {
                    self.set_deadline(key, 0);
                }
            }
            None => {
                self.map.insert(
                    Rc::from(key),
                    Entry {
                        value: Value::Str(value.to_vec()),
                        expires: 0,
                    },
                );
            }
        }
    }

    /// Active expiry: deletes at most `max` keys past their deadline; true if more are due.
    fn expire_some(&mut self, max: usize) -> bool {
        let now = self.now();
        for _ in 0..max {
            match self.expiring.first() {
                Some((deadline, _)) if *deadline <= now => {
                    if let Some((_, key)) = self.expiring.pop_first() {
                        self.map.remove(&key);
                    }
                }
                _ => return false,
            }
        }
        matches!(self.expiring.first(), Some((d, _)) if *d <= now)
    }

    fn clear(&mut self) {
        self.map.clear();
        self.expiring.clear();
    }
}

// ---------------------------------------------------------------------------------------
// Commands

/// What a command may touch: the store, the reply buffer, its connection's state.
struct Ctx<'a> {
    db: &'a mut Db,
    out: &'a mut Out,
    client: &'a mut Client,
    config: &'a Config,
}

struct Client {
    id: i64,
    name: Vec<u8>,
    /// QUIT was received: close after the reply.
    quit: bool,
}

struct Config {
    addr: String,
    max_request: usize,
}

/// A command: its name (upper case), Redis's arity (n: exactly n words with the name;
/// -n: at least n), flags and key positions for COMMAND, group and summary for COMMAND
/// DOCS, and its code.
struct Command {
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
    group: &'static str,
    summary: &'static str,
    run: fn(&mut Ctx<'_>, Argv<'_>),
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom", "fast"];
const WS: &[&str] = &["write"];
const F: &[&str] = &["fast"];
const NONE: (i32, i32, i32) = (0, 0, 0);
const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);

macro_rules! cmd {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $summary:literal, $run:expr) => {
        Command {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            group: $group,
            summary: $summary,
            run: $run,
        }
    };
}

/// Every command, the ones redis-benchmark hammers first (lookup is a linear scan).
#[rustfmt::skip]
static COMMANDS: &[Command] = &[
    cmd!("GET", 2, R, ONE, "string", "Returns the string value of a key.", get),
    cmd!("SET", -3, W, ONE, "string", "Sets the string value of a key, with options.", set),
    cmd!("PING", -1, F, NONE, "connection", "Returns PONG, or the argument.", ping),
    cmd!("INCR", 2, W, ONE, "string", "Increments the integer value of a key by one.", incr),
    cmd!("MGET", -2, R, ALL, "string", "Returns the values of several keys.", mget),
    cmd!("MSET", -3, W, (1, -1, 2), "string", "Sets several keys.", mset),
    cmd!("DEL", -2, WS, ALL, "generic", "Deletes keys.", del),
    cmd!("ECHO", 2, F, NONE, "connection", "Returns the given string.", echo),
    cmd!("GETSET", 3, W, ONE, "string", "Sets a key and returns its old value.", getset),
    cmd!("EXISTS", -2, R, ALL, "generic", "Counts the given keys that exist.", exists),
    cmd!("DECR", 2, W, ONE, "string", "Decrements the integer value of a key by one.", decr),
    cmd!("INCRBY", 3, W, ONE, "string", "Increments the integer value of a key.", incrby),
    cmd!("DECRBY", 3, W, ONE, "string", "Decrements the integer value of a key.", decrby),
    cmd!("EXPIRE", 3, W, ONE, "generic", "Sets a key's time to live in seconds.", expire),
    cmd!("PEXPIRE", 3, W, ONE, "generic", "Sets a key's time to live in milliseconds.", pexpire),
    cmd!("TTL", 2, R, ONE, "generic", "Returns a key's time to live in seconds.", ttl),
    cmd!("PTTL", 2, R, ONE, "generic", "Returns a key's time to live in milliseconds.", pttl),
    cmd!("PERSIST", 2, W, ONE, "generic", "Removes a key's time to live.", persist),
    cmd!("TYPE", 2, R, ONE, "generic", "Returns the type of a key's value.", type_of),
    cmd!("DBSIZE", 1, R, NONE, "server", "Returns the number of keys.", dbsize),
    cmd!("FLUSHALL", -1, WS, NONE, "server", "Deletes every key.", flushall),
    cmd!("KEYS", 2, &["readonly"], NONE, "generic", "Returns the keys matching a glob.", keys),
    cmd!("SELECT", 2, F, NONE, "connection", "Selects the database (only 0 exists).", select),
    cmd!("QUIT", -1, F, NONE, "connection", "Closes the connection.", quit),
    cmd!("LPUSH", -3, W, ONE, "list", "Prepends elements to a list.", lpush),
    cmd!("RPUSH", -3, W, ONE, "list", "Appends elements to a list.", rpush),
    cmd!("LPOP", 2, W, ONE, "list", "Removes and returns the first element.", lpop),
    cmd!("RPOP", 2, W, ONE, "list", "Removes and returns the last element.", rpop),
    cmd!("LLEN", 2, R, ONE, "list", "Returns the length of a list.", llen),
    cmd!("LRANGE", 4, &["readonly"], ONE, "list", "Returns a range of a list.", lrange),
    cmd!("CONFIG", -2, &["admin"], NONE, "server", "CONFIG GET parameter [parameter ...].", config),
    cmd!("CLIENT", -2, &["admin"], NONE, "connection", "CLIENT SETNAME, GETNAME or ID.", client),
    cmd!("COMMAND", -1, &["loading"], NONE, "server", "Describes the commands.", command),
];

fn lookup(name: &[u8]) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|c| c.name.len() == name.len() && c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Runs one request.
fn execute(ctx: &mut Ctx<'_>, argv: Argv<'_>) {
    let name = argv.get(0);
    let Some(cmd) = lookup(name) else {
        let mut args = String::new();
        for a in argv.iter().skip(1) {
            if args.len() >= 128 {
                break;
            }
            let room = 128 - args.len();
            let text = String::from_utf8_lossy(&a[..a.len().min(room)]);
            args.push_str(&format!("'{text}' "));
        }
        let name = String::from_utf8_lossy(&name[..name.len().min(128)]);
        ctx.out.error(&format!(
            "ERR unknown command '{name}', with args beginning with: {args}"
        ));
        return;
    };
    let n = argv.len() as i32;
    if (cmd.arity > 0 && n != cmd.arity) || n < -cmd.arity {
        arity_error(ctx.out, &cmd.name.to_ascii_lowercase());
        return;
    }
    (cmd.run)(ctx, argv);
}

fn arity_error(out: &mut Out, name: &str) {
    out.error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ));
}

fn ping(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    match a.len() {
        1 => ctx.out.raw(b"+PONG\r\n"),
        2 => ctx.out.bulk(a.get(1)),
        _ => arity_error(ctx.out, "ping"),
    }
}

fn echo(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    ctx.out.bulk(a.get(1));
}

fn get(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    match ctx.db.get(a.get(1)) {
        None => ctx.out.nil(),
        Some(Entry {
            value: Value::Str(v),
            ..
        }) => ctx.out.bulk(v),
        Some(_) => ctx.out.wrong_type(),
    }
}

/// Milliseconds from now as a deadline, `None` if it overflows.
fn deadline_after(db: &Db, ms: i64) -> Option<u64> {
    db.now().checked_add(u64::try_from(ms).ok()?)
}

fn set(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let (key, value) = (a.get(1), a.get(2));
    let (mut nx, mut xx, mut keep_ttl, mut want_old) = (false, false, false, false);
    let mut ttl_ms: Option<i64> = None;
    let mut i = 3;
    while i < a.len() {
        let opt = a.get(i);
        let has_next = i + 1 < a.len();
        if opt.eq_ignore_ascii_case(b"NX") && !xx {
            nx = true;
        } else if opt.eq_ignore_ascii_case(b"XX") && !nx {
            xx = true;
        } else if opt.eq_ignore_ascii_case(b"KEEPTTL") && ttl_ms.is_none() {
            keep_ttl = true;
        } else if opt.eq_ignore_ascii_case(b"GET") {
            want_old = true;
        } else if (opt.eq_ignore_ascii_case(b"EX") || opt.eq_ignore_ascii_case(b"PX"))
            && has_next
            && ttl_ms.is_none()
            && !keep_ttl
        {
            let Some(n) = parse_int(a.get(i + 1)) else {
                return ctx.out.not_integer();
            };
            let ms = if opt.eq_ignore_ascii_case(b"EX") {
                n.checked_mul(1000)
            } else {
                Some(n)
            };
            match ms {
                Some(ms) if ms > 0 && deadline_after(ctx.db, ms).is_some() => ttl_ms = Some(ms),
                _ => return ctx.out.error("ERR invalid expire time in 'set' command"),
            }
            i += 1;
        } else {
            return ctx.out.syntax();
        }
        i += 1;
    }
    if !(nx || xx || want_old) {
        // The common case: one hash lookup.
        ctx.db.expire_if_due(key);
        ctx.db.set(key, value, keep_ttl);
        if let Some(ms) = ttl_ms {
            let deadline = deadline_after(ctx.db, ms).unwrap_or(u64::MAX);
            ctx.db.set_deadline(key, deadline);
        }
        return ctx.out.ok();
    }
    let exists = match ctx.db.get(key) {
        None => false,
        Some(Entry {
            value: Value::Str(v),
            ..
        }) => {
            if want_old {
                ctx.out.bulk(v);
            }
            true
        }
        Some(_) if want_old => return ctx.out.wrong_type(),
        Some(_) => true,
    };
    if want_old && !exists {
        ctx.out.nil();
    }
    if (nx && exists) || (xx && !exists) {
        if !want_old {
            ctx.out.nil();
        }
        return;
    }
    ctx.db.set(key, value, keep_ttl);
    if let Some(ms) = ttl_ms {
        let deadline = deadline_after(ctx.db, ms).unwrap_or(u64::MAX);
        ctx.db.set_deadline(key, deadline);
    }
    if !want_old {
        ctx.out.ok();
    }
}

fn getset(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let key = a.get(1);
    match ctx.db.get(key) {
        None => ctx.out.nil(),
        Some(Entry {
            value: Value::Str(v),
            ..
        }) => ctx.out.bulk(v),
        Some(_) => return ctx.out.wrong_type(),
    }
    ctx.db.set(key, a.get(2), false);
}

fn del(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let mut n = 0;
    for key in a.iter().skip(1) {
        ctx.db.expire_if_due(key);
        n += i64::from(ctx.db.remove(key));
    }
    ctx.out.int(n);
}

fn exists(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let mut n = 0;
    for key in a.iter().skip(1) {
        n += i64::from(ctx.db.get(key).is_some());
    }
    ctx.out.int(n);
}

fn add_to(ctx: &mut Ctx<'_>, key: &[u8], by: i64) {
    let current = match ctx.db.get_mut(key) {
        None => 0,
        Some(Entry {
            value: Value::Str(v),
            ..
        }) => match parse_int(v) {
            Some(n) => n,
            None => return ctx.out.not_integer(),
        },
        Some(_) => return ctx.out.wrong_type(),
    };
    let Some(new) = current.checked_add(by) else {
        return ctx.out.error("ERR increment or decrement would overflow");
    };
    let mut digits = Out(Vec::with_capacity(20));
    digits.number(new);
    ctx.db.set(key, &digits.0, true);
    ctx.out.int(new);
}

fn incr(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    add_to(ctx, a.get(1), 1);
}

fn decr(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    add_to(ctx, a.get(1), -1);
}

fn incrby(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    match parse_int(a.get(2)) {
        Some(by) => add_to(ctx, a.get(1), by),
        None => ctx.out.not_integer(),
    }
}

fn decrby(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    match parse_int(a.get(2)).and_then(i64::checked_neg) {
        Some(by) => add_to(ctx, a.get(1), by),
        None => ctx.out.not_integer(),
    }
}

fn mget(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    ctx.out.array(a.len() - 1);
    for key in a.iter().skip(1) {
        match ctx.db.get(key) {
            Some(Entry {
                value: Value::Str(v),
                ..
            }) => ctx.out.bulk(v),
            _ => ctx.out.nil(),
        }
    }
}

fn mset(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    if a.len().is_multiple_of(2) {
        return arity_error(ctx.out, "mset");
    }
    for i in (1..a.len()).step_by(2) {
        ctx.db.set(a.get(i), a.get(i + 1), false);
    }
    ctx.out.ok();
}

fn set_expiry(ctx: &mut Ctx<'_>, a: Argv<'_>, unit_ms: i64, name: &str) {
    let key = a.get(1);
    let Some(n) = parse_int(a.get(2)) else {
        return ctx.out.not_integer();
    };
    let Some(ms) = n.checked_mul(unit_ms) else {
        return ctx
            .out
            .error(&format!("ERR invalid expire time in '{name}' command"));
    };
    if ctx.db.get(key).is_none() {
        return ctx.out.int(0);
    }
    if ms <= 0 {
        ctx.db.remove(key);
        return ctx.out.int(1);
    }
    match deadline_after(ctx.db, ms) {
        Some(deadline) => {
            ctx.db.set_deadline(key, deadline);
            ctx.out.int(1);
        }
        None => ctx
            .out
            .error(&format!("ERR invalid expire time in '{name}' command")),
    }
}

fn expire(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    set_expiry(ctx, a, 1000, "expire");
}

fn pexpire(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    set_expiry(ctx, a, 1, "pexpire");
}

/// Remaining time to live in ms; -2 for no key, -1 for no deadline.
fn remaining(db: &mut Db, key: &[u8]) -> i64 {
    match db.get(key).map(|e| e.expires) {
        None => -2,
        Some(0) => -1,
        Some(deadline) => deadline.saturating_sub(db.now()) as i64,
    }
}

fn ttl(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let ms = remaining(ctx.db, a.get(1));
    ctx.out.int(if ms < 0 { ms } else { (ms + 500) / 1000 });
}

fn pttl(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let ms = remaining(ctx.db, a.get(1));
    ctx.out.int(ms);
}

fn persist(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let key = a.get(1);
    match ctx.db.get(key).map(|e| e.expires) {
        Some(d) if d != 0 => {
            ctx.db.set_deadline(key, 0);
            ctx.out.int(1);
        }
        _ => ctx.out.int(0),
    }
}

fn type_of(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let t = match ctx.db.get(a.get(1)) {
        None => "none",
        Some(Entry {
            value: Value::Str(_),
            ..
        }) => "string",
        Some(Entry {
            value: Value::List(_),
            ..
        }) => "list",
    };
    ctx.out.simple(t);
}

fn dbsize(ctx: &mut Ctx<'_>, _: Argv<'_>) {
    ctx.out.int(ctx.db.map.len() as i64);
}

fn flushall(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let mode_ok = a.len() == 1
        || (a.len() == 2
            && (a.get(1).eq_ignore_ascii_case(b"SYNC") || a.get(1).eq_ignore_ascii_case(b"ASYNC")));
    if !mode_ok {
        return ctx.out.syntax();
    }
    ctx.db.clear();
    ctx.out.ok();
}

fn keys(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let pattern = a.get(1);
    let now = ctx.db.now();
    let found: Vec<&Rc<[u8]>> = ctx
        .db
        .map
        .iter()
        .filter(|(k, e)| (e.expires == 0 || e.expires > now) && glob(pattern, k))
        .map(|(k, _)| k)
        .collect();
    ctx.out.array(found.len());
    for k in found {
        ctx.out.bulk(k);
    }
}

fn select(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    match parse_int(a.get(1)) {
        Some(0) => ctx.out.ok(),
        Some(_) => ctx.out.error("ERR DB index is out of range"),
        None => ctx.out.not_integer(),
    }
}

fn quit(ctx: &mut Ctx<'_>, _: Argv<'_>) {
    ctx.client.quit = true;
    ctx.out.ok();
}

fn push(ctx: &mut Ctx<'_>, a: Argv<'_>, front: bool) {
    let key = a.get(1);
    if ctx.db.get(key).is_none() {
        ctx.db.map.insert(
            Rc::from(key),
            Entry {
                value: Value::List(VecDeque::new()),
                expires: 0,
            },
        );
    }
    let Some(Entry {
        value: Value::List(list),
        ..
    }) = ctx.db.map.get_mut(key)
    else {
        return ctx.out.wrong_type();
    };
    for v in a.iter().skip(2) {
        if front {
            list.push_front(v.to_vec());
        } else {
            list.push_back(v.to_vec());
        }
    }
    let n = list.len() as i64;
    ctx.out.int(n);
}

fn lpush(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    push(ctx, a, true);
}

fn rpush(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    push(ctx, a, false);
}

fn pop(ctx: &mut Ctx<'_>, a: Argv<'_>, front: bool) {
    let key = a.get(1);
    let (item, now_empty) = match ctx.db.get_mut(key) {
        None => return ctx.out.nil(),
        Some(Entry {
            value: Value::List(list),
            ..
        }) => {
            let item = if front {
                list.pop_front()
            } else {
                list.pop_back()
            };
            (item, list.is_empty())
        }
        Some(_) => return ctx.out.wrong_type(),
    };
    match item {
        Some(v) => ctx.out.bulk(&v),
        None => ctx.out.nil(),
    }
    if now_empty {
        ctx.db.remove(key); // Redis deletes a list that becomes empty
    }
}

fn lpop(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    pop(ctx, a, true);
}

fn rpop(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    pop(ctx, a, false);
}

fn llen(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    match ctx.db.get(a.get(1)) {
        None => ctx.out.int(0),
        Some(Entry {
            value: Value::List(l),
            ..
        }) => ctx.out.int(l.len() as i64),
        Some(_) => ctx.out.wrong_type(),
    }
}

fn lrange(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let (Some(start), Some(stop)) = (parse_int(a.get(2)), parse_int(a.get(3))) else {
        return ctx.out.not_integer();
    };
    let list = match ctx.db.get(a.get(1)) {
        None => return ctx.out.array(0),
        Some(Entry {
            value: Value::List(l),
            ..
        }) => l,
        Some(_) => return ctx.out.wrong_type(),
    };
    let len = list.len() as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len {
        return ctx.out.array(0);
    }
    ctx.out.array((stop - start + 1) as usize);
    for v in list.range(start as usize..=stop as usize) {
        ctx.out.bulk(v);
    }
}

fn config(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let sub = a.get(1);
    if !sub.eq_ignore_ascii_case(b"GET") {
        let sub = String::from_utf8_lossy(sub);
        return ctx
            .out
            .error(&format!("ERR unknown subcommand '{sub}'. Try CONFIG HELP."));
    }
    if a.len() < 3 {
        return arity_error(ctx.out, "config|get");
    }
    let port = ctx.config.addr.rsplit_once(':').map_or("", |(_, p)| p);
    let bind = ctx.config.addr.rsplit_once(':').map_or("", |(h, _)| h);
    let max = ctx.config.max_request.to_string();
    // What redis-benchmark and redis-cli ask for, and the limits of this server.
    let params: [(&str, &str); 9] = [
        ("save", ""),
        ("appendonly", "no"),
        ("databases", "1"),
        ("maxmemory", "0"),
        ("timeout", "0"),
        ("port", port),
        ("bind", bind),
        ("proto-max-bulk-len", &max),
        ("client-query-buffer-limit", &max),
    ];
    let matched: Vec<&(&str, &str)> = params
        .iter()
        .filter(|(name, _)| a.iter().skip(2).any(|p| glob_nocase(p, name.as_bytes())))
        .collect();
    ctx.out.array(matched.len() * 2);
    for (name, value) in matched {
        ctx.out.bulk(name.as_bytes());
        ctx.out.bulk(value.as_bytes());
    }
}

fn client(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    let sub = a.get(1);
    if sub.eq_ignore_ascii_case(b"SETNAME") {
        if a.len() != 3 {
            return arity_error(ctx.out, "client|setname");
        }
        let name = a.get(2);
        if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            return ctx
                .out
                .error("ERR Client names cannot contain spaces, newlines or special characters.");
        }
        ctx.client.name = name.to_vec();
        ctx.out.ok();
    } else if sub.eq_ignore_ascii_case(b"GETNAME") {
        if ctx.client.name.is_empty() {
            ctx.out.nil();
        } else {
            ctx.out.bulk(&ctx.client.name);
        }
    } else if sub.eq_ignore_ascii_case(b"ID") {
        ctx.out.int(ctx.client.id);
    } else {
        let sub = String::from_utf8_lossy(sub);
        ctx.out
            .error(&format!("ERR unknown subcommand '{sub}'. Try CLIENT HELP."));
    }
}

/// One command as `COMMAND` and `COMMAND INFO` describe it (Redis 7's ten fields).
fn command_info(out: &mut Out, c: &Command) {
    out.array(10);
    out.bulk(c.name.to_ascii_lowercase().as_bytes());
    out.int(i64::from(c.arity));
    out.array(c.flags.len());
    for f in c.flags {
        out.simple(f);
    }
    out.int(i64::from(c.keys.0));
    out.int(i64::from(c.keys.1));
    out.int(i64::from(c.keys.2));
    out.array(1);
    out.simple(&format!("@{}", c.group));
    out.array(0); // tips
    out.array(0); // key specs
    out.array(0); // subcommands
}

/// One command as `COMMAND DOCS` describes it: a flattened map.
fn command_docs(out: &mut Out, c: &Command) {
    out.bulk(c.name.to_ascii_lowercase().as_bytes());
    out.array(6);
    out.bulk(b"summary");
    out.bulk(c.summary.as_bytes());
    out.bulk(b"since");
    out.bulk(b"1.0.0");
    out.bulk(b"group");
    out.bulk(c.group.as_bytes());
}

fn command(ctx: &mut Ctx<'_>, a: Argv<'_>) {
    if a.len() == 1 {
        ctx.out.array(COMMANDS.len());
        for c in COMMANDS {
            command_info(ctx.out, c);
        }
        return;
    }
    let sub = a.get(1);
    let names = || a.iter().skip(2);
    if sub.eq_ignore_ascii_case(b"COUNT") && a.len() == 2 {
        ctx.out.int(COMMANDS.len() as i64);
    } else if sub.eq_ignore_ascii_case(b"INFO") {
        if a.len() == 2 {
            ctx.out.array(COMMANDS.len());
            COMMANDS.iter().for_each(|c| command_info(ctx.out, c));
            return;
        }
        ctx.out.array(a.len() - 2);
        for name in names() {
            match lookup(name) {
                Some(c) => command_info(ctx.out, c),
                None => ctx.out.raw(b"*-1\r\n"),
            }
        }
    } else if sub.eq_ignore_ascii_case(b"DOCS") {
        if a.len() == 2 {
            ctx.out.array(COMMANDS.len() * 2);
            COMMANDS.iter().for_each(|c| command_docs(ctx.out, c));
            return;
        }
        let found: Vec<&Command> = names().filter_map(lookup).collect();
        ctx.out.array(found.len() * 2);
        found.into_iter().for_each(|c| command_docs(ctx.out, c));
    } else {
        let sub = String::from_utf8_lossy(sub);
        ctx.out.error(&format!(
            "ERR unknown subcommand '{sub}'. Try COMMAND HELP."
        ));
    }
}

// ---------------------------------------------------------------------------------------
// Glob matching (KEYS, CONFIG GET)

fn glob(pattern: &[u8], s: &[u8]) -> bool {
    glob_with(pattern, s, false)
}

fn glob_nocase(pattern: &[u8], s: &[u8]) -> bool {
    glob_with(pattern, s, true)
}

/// Redis-style glob: `*`, `?`, `[abc]`, `[^a-z]`, `\x`. Linear backtracking: only the most
/// recent `*` is ever retried, which is enough because `*` matches any run.
fn glob_with(p: &[u8], s: &[u8], nocase: bool) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi + 1, si));
            pi += 1;
            continue;
        }
        if pi < p.len() {
            if let Some(next) = match_one(p, pi, s[si], nocase) {
                pi = next;
                si += 1;
                continue;
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether the pattern element at `p[pi]` (not `*`) matches byte `c`; the index after
/// the element if so.
fn match_one(p: &[u8], pi: usize, c: u8, nocase: bool) -> Option<usize> {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    match p[pi] {
        b'?' => Some(pi + 1),
        b'\\' if pi + 1 < p.len() => eq(p[pi + 1], c).then_some(pi + 2),
        b'[' => {
            let mut i = pi + 1;
            let negate = p.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            while i < p.len() && p[i] != b']' {
                if p[i] == b'\\' && i + 1 < p.len() {
                    hit |= eq(p[i + 1], c);
                    i += 2;
                } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                    let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
                    hit |= (lo..=hi).contains(&c) || (nocase && nocase_range(lo, hi, c));
                    i += 3;
                } else {
                    hit |= eq(p[i], c);
                    i += 1;
                }
            }
            // An unclosed class ends at the pattern's end, as in Redis.
            let next = if i < p.len() { i + 1 } else { i };
            (hit != negate).then_some(next)
        }
        other => eq(other, c).then_some(pi + 1),
    }
}

fn nocase_range(lo: u8, hi: u8, c: u8) -> bool {
    let (l, u) = (c.to_ascii_lowercase(), c.to_ascii_uppercase());
    (lo..=hi).contains(&l) || (lo..=hi).contains(&u)
}

// ---------------------------------------------------------------------------------------
// Connections

struct Shared {
    db: RefCell<Db>,
    config: Config,
    next_client: std::cell::Cell<i64>,
}

fn handle(mut conn: TcpStream, shared: &Shared) -> io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut parser = Parser::new(shared.config.max_request);
    let mut out = Out(Vec::with_capacity(4096));
    let id = shared.next_client.get();
    shared.next_client.set(id + 1);
    let mut client = Client {
        id,
        name: Vec::new(),
        quit: false,
    };
    loop {
        // Answer every complete request buffered, parsing in place. The store is borrowed
        // for the batch only: nothing in it blocks.
        let mut done = 0;
        let mut close = false;
        {
            let buf = conn.buffered();
            let mut db = shared.db.borrow_mut();
            while out.0.len() < REPLY_FLUSH && !client.quit {
                let input = &buf[done..];
                match parser.parse(input) {
                    Parsed::Request { len, inline } => {
                        let argv = Argv {
                            base: if inline { &parser.inline } else { input },
                            spans: &parser.spans,
                        };
                        let mut ctx = Ctx {
                            db: &mut db,
                            out: &mut out,
                            client: &mut client,
                            config: &shared.config,
                        };
                        execute(&mut ctx, argv);
                        done += len;
                    }
                    Parsed::Empty(len) => done += len,
                    Parsed::Partial => break,
                    Parsed::Error(msg) => {
                        out.error(&msg);
                        close = true;
                        break;
                    }
                }
            }
        }
        conn.consume(done);
        if !out.0.is_empty() {
            conn.send(&out.0)?;
            out.0.clear();
            if out.0.capacity() > 4 * REPLY_FLUSH {
                out.0.shrink_to(REPLY_FLUSH);
            }
        }
        if close || client.quit {
            return conn.close();
        }
        if done > 0 && parser.pos == 0 && !conn.buffered().is_empty() {
            continue; // replies were flushed early; more requests are buffered
        }
        conn.flush()?;
        if conn.receive_more()? == 0 {
            return conn.close();
        }
    }
}

/// Active expiry: a bounded batch per run, sooner again while keys remain due.
fn start_expiry(shared: Rc<Shared>) {
    copas::Timer::after(EXPIRE_PERIOD, move |timer| {
        let more = shared.db.borrow_mut().expire_some(EXPIRE_BATCH);
        timer.arm(if more {
            Duration::from_millis(1)
        } else {
            EXPIRE_PERIOD
        });
    });
}

fn main() {
    let args = Args::parse("kv", USAGE, &["--addr", "--max-request"], 0);
    let addr = args.addr("127.0.0.1:6380");
    let max_request = args.number("--max-request", DEFAULT_MAX_REQUEST);
    if max_request < 16 {
        args.usage_error("option '--max-request' must be at least 16 bytes");
    }
    let listener = copas::TcpListener::bind(addr.as_str())
        .unwrap_or_else(|e| cli::cannot_listen("kv", &addr, &e));
    let local = listener
        .local_addr()
        .map_or_else(|_| addr.clone(), |a| a.to_string());
    let shared = Rc::new(Shared {
        db: RefCell::new(Db::new()),
        config: Config {
            addr: local.clone(),
            max_request,
        },
        next_client: std::cell::Cell::new(1),
    });
    start_expiry(shared.clone());
    copas::ServerBuilder::new()
        .name("kv")
        .serve(listener, move |conn| handle(conn, &shared))
        .unwrap_or_else(|e| cli::cannot_listen("kv", &addr, &e));
    println!("kv server listening on {local}");
    cli::run("kv");
}
