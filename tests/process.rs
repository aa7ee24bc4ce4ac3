//! `copas::process` with real child processes: output and error read while other tasks
//! run, standard input closed → end of file in the child, exit status, kill, wait with a
//! timeout, many children at once, no zombie after dropping a running child, and a child
//! that writes 8 MiB while its parent writes 8 MiB to it (no deadlock).

mod common;

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::guard;
use copas::process::{Command, Stdio};

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

/// The state letter of process `pid` in /proc (`Z` for a zombie), or `None` once it is
/// gone (reaped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the state follows the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Waits (with a generous bound that only stops a hang) until `pid` is gone from /proc.
fn assert_reaped(pid: u32) {
    let end = Instant::now() + Duration::from_secs(20);
    while let Some(state) = proc_state(pid) {
        assert!(
            Instant::now() < end,
            "process {pid} still exists (state {state}) 20 s after it should have been reaped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn stdout_and_stderr_are_read_while_other_tasks_run() {
    guard(|| {
        let log = Rc::new(RefCell::new(Vec::<String>::new()));
        // The child prints "two" only after the other task has written to its stdin, and
        // that task runs only while the reader is suspended waiting for "two": a read
        // that blocked the thread would hang here.
        let mut child = sh("echo one; read go; echo two; echo oops >&2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let l = log.clone();
        let errors = copas::spawn(move || -> io::Result<Vec<u8>> {
            let e = err.receive_to_end()?.to_vec();
            l.borrow_mut().push("stderr closed".into());
            Ok(e)
        });
        let l = log.clone();
        let reader = copas::spawn(move || -> io::Result<Vec<String>> {
            let mut lines = Vec::new();
            while let Some(line) = out.receive_line()? {
                let line = String::from_utf8(line.to_vec()).unwrap();
                l.borrow_mut().push(format!("line {line}"));
                lines.push(line);
            }
            Ok(lines)
        });
        let l = log.clone();
        let ticker = copas::spawn(move || {
            for i in 0..3 {
                copas::sleep(Duration::from_millis(5))?;
                l.borrow_mut().push(format!("tick {i}"));
            }
            stdin.write_all(b"go\n")?;
            l.borrow_mut().push("go sent".into());
            io::Result::Ok(())
        });
        copas::run().unwrap();
        ticker.join().unwrap().unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), ["one", "two"]);
        assert_eq!(errors.join().unwrap().unwrap(), b"oops\n");
        assert!(child.wait().unwrap().success());
        let log = log.borrow();
        let pos = |s: &str| log.iter().position(|x| x == s).unwrap();
        assert!(pos("tick 2") < pos("go sent"), "{log:?}");
        assert!(pos("go sent") < pos("line two"), "{log:?}");
        assert!(pos("go sent") < pos("stderr closed"), "{log:?}");
    });
}

#[test]
fn closing_stdin_gives_the_child_end_of_file() {
    guard(|| {
        let h = copas::spawn(|| -> io::Result<_> {
            let mut child = Command::new("wc")
                .arg("-c")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"12345")?;
            stdin.close();
            let mut out = child.stdout.take().unwrap();
            let count = out.receive_line()?.unwrap();
            let status = child.wait()?;
            Ok((String::from_utf8(count.to_vec()).unwrap(), status))
        });
        copas::run().unwrap();
        let (count, status) = h.join().unwrap().unwrap();
        assert_eq!(count.trim(), "5");
        assert!(status.success());
    });
}

#[test]
fn exit_status_is_reported() {
    guard(|| {
        let h = copas::spawn(|| sh("exit 3").status());
        copas::run().unwrap();
        let status = h.join().unwrap().unwrap();
        assert_eq!(status.code(), Some(3));
        // output() outside any task drives the loop itself.
        let out = sh("printf out; printf err >&2; exit 4").output().unwrap();
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(out.stdout, b"out");
        assert_eq!(out.stderr, b"err");
    });
}

#[test]
fn a_missing_program_is_not_found() {
    guard(|| {
        let err = Command::new("/nonexistent/copas-no-such-program")
            .spawn()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    });
}

#[test]
fn kill_ends_a_running_child() {
    guard(|| {
        let h = copas::spawn(|| -> io::Result<_> {
            let mut child = Command::new("sleep").arg("60").spawn()?;
            assert!(child.try_wait()?.is_none());
            child.kill()?;
            let status = child.wait()?;
            // Killing an exited child does nothing.
            child.kill()?;
            Ok(status)
        });
        copas::run().unwrap();
        let status = h.join().unwrap().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    });
}

#[test]
fn wait_timeout_gives_up_and_a_later_wait_succeeds() {
    guard(|| {
        let h = copas::spawn(|| -> io::Result<_> {
            let mut child = Command::new("sleep").arg("0.3").spawn()?;
            let started = Instant::now();
            let first = child.wait_timeout(Duration::from_millis(50))?;
            let waited = started.elapsed();
            let second = child.wait_timeout(Duration::from_secs(20))?;
            Ok((first, waited, second))
        });
        copas::run().unwrap();
        let (first, waited, second) = h.join().unwrap().unwrap();
        assert!(first.is_none(), "the child was still sleeping");
        assert!(
            waited >= Duration::from_millis(50),
            "never before the deadline"
        );
        assert!(second.unwrap().success());
    });
}

#[test]
fn fifty_children_at_once() {
    guard(|| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                copas::spawn(move || -> io::Result<(String, i32)> {
                    let mut child = sh(&format!("sleep 0.1; echo child {i}; exit {}", i % 7))
                        .stdout(Stdio::piped())
                        .spawn()?;
                    let line = child.stdout.take().unwrap().receive_line()?.unwrap();
                    let code = child.wait()?.code().unwrap();
                    Ok((String::from_utf8(line.to_vec()).unwrap(), code))
                })
            })
            .collect();
        copas::run().unwrap();
        for (i, h) in handles.into_iter().enumerate() {
            let (line, code) = h.join().unwrap().unwrap();
            assert_eq!(line, format!("child {i}"));
            assert_eq!(code, i32::try_from(i % 7).unwrap());
        }
    });
}

#[test]
fn dropping_a_running_child_leaves_no_zombie() {
    guard(|| {
        let child = Command::new("sleep").arg("0.2").spawn().unwrap();
        let pid = child.id();
        assert!(matches!(proc_state(pid), Some(s) if s != 'Z'));
        drop(child);
        assert_reaped(pid);

        // kill_on_drop: gone well before its 60 s.
        let child = Command::new("sleep")
            .arg("60")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id();
        drop(child);
        assert_reaped(pid);

        // A child that exited but was never waited for is reaped by the drop itself.
        let mut child = sh("exit 0").spawn().unwrap();
        let pid = child.id();
        while proc_state(pid) != Some('Z') {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(child.try_wait().unwrap().is_some());
        drop(child);
        assert_eq!(proc_state(pid), None);
    });
}

#[test]
fn eight_mib_each_way_does_not_deadlock() {
    guard(|| {
        const N: usize = 8 << 20;
        let h = copas::spawn(|| -> io::Result<Vec<u8>> {
            // `cat` echoes as it reads: with 64 KiB pipes both ways, a parent that first
            // wrote everything and then read would deadlock.
            let mut child = Command::new("cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut stdin = child.stdin.take().unwrap();
            let mut stdout = child.stdout.take().unwrap();
            let writer = copas::spawn(move || -> io::Result<()> {
                let data: Vec<u8> = (0..N).map(|i| (i * 7 % 251) as u8).collect();
                stdin.write_all(&data)?;
                drop(stdin);
                Ok(())
            });
            let mut got = Vec::with_capacity(N);
            stdout.read_to_end(&mut got)?;
            writer.join().unwrap()?;
            assert!(child.wait()?.success());
            Ok(got)
        });
        copas::run().unwrap();
        let got = h.join().unwrap().unwrap();
        assert_eq!(got.len(), N);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i * 7 % 251) as u8));
    });
}

#[test]
fn a_read_timeout_keeps_what_arrived() {
    guard(|| {
        let h = copas::spawn(|| -> io::Result<_> {
            let mut child = sh("printf part; sleep 1; echo ial")
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let mut out = child.stdout.take().unwrap();
            out.set_read_timeout(Some(Duration::from_millis(100)))?;
            let err = out.receive_line().unwrap_err();
            out.set_read_timeout(None)?;
            let line = out.receive_line()?.unwrap();
            Ok((err.kind(), line))
        });
        copas::run().unwrap();
        let (kind, line) = h.join().unwrap().unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert_eq!(&line[..], b"partial");
    });
}

#[test]
fn receive_line_into_reuses_one_vec_and_returns_a_last_line_without_newline() {
    guard(|| {
        let h = copas::spawn(|| -> io::Result<_> {
            let mut child = sh("printf 'one\\r\\ntwo\\n\\nlast'")
                .stdout(Stdio::piped())
                .spawn()?;
            let mut out = child.stdout.take().unwrap();
            let mut lines = Vec::new();
            let mut line = Vec::new();
            while out.receive_line_into(&mut line)? {
                lines.push(String::from_utf8(line.clone()).unwrap());
                line.clear();
            }
            assert!(child.wait()?.success());
            Ok(lines)
        });
        copas::run().unwrap();
        assert_eq!(h.join().unwrap().unwrap(), ["one", "two", "", "last"]);
    });
}

#[cfg(target_os = "linux")]
#[test]
fn on_linux_the_exit_is_watched_on_a_registered_pidfd() {
    guard(|| {
        let rt = copas::Runtime::current();
        let _warm = copas::TcpListener::bind("127.0.0.1:0").unwrap(); // creates the reactor
        let before = rt.stats().sockets;
        let mut child = Command::new("sleep").arg("0.1").spawn().unwrap();
        assert_eq!(rt.stats().sockets, before + 1, "the pidfd is registered");
        assert!(child.wait().unwrap().success());
        drop(child);
        assert_eq!(
            rt.stats().sockets,
            before,
            "and deregistered with the child"
        );
    });
}
