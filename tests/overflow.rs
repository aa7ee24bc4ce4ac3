//! A task that overflows its stack is named in a clear message and the process aborts —
//! never a silent SIGSEGV. Run in a child process (this test binary, re-executed).

use std::process::Command;

const CHILD_ENV: &str = "COPAS_OVERFLOW_CHILD";

#[inline(never)]
fn recurse(depth: u64, buf: &mut [u8; 1024]) -> u64 {
    let mut local = [depth as u8; 1024];
    local[0] = buf[1];
    std::hint::black_box(&mut local);
    if depth == u64::MAX {
        return 0;
    }
    1 + recurse(depth + 1, &mut local)
}

fn child() {
    let h = copas::Builder::new()
        .name("deep-recursion".into())
        .stack_size(64 * 1024)
        .spawn(|| recurse(0, &mut [0u8; 1024]))
        .unwrap();
    let _ = h.join();
    unreachable!("the overflowing task returned");
}

#[test]
fn stack_overflow_names_the_task_and_aborts() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stack_overflow_names_the_task_and_aborts",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc_sigabrt()),
            "stderr: {stderr}"
        );
    }
    assert!(
        stderr.contains("copas: task 'deep-recursion'")
            && stderr.contains("has overflowed its stack of 65536 bytes"),
        "stderr: {stderr}"
    );
}

/// A fault that is not a task's overflow goes on to the handler installed before copas's:
/// here std's own report of a thread's stack overflow.
#[test]
fn other_faults_reach_the_previous_handler() {
    if std::env::var_os("COPAS_THREAD_OVERFLOW_CHILD").is_some() {
        copas::spawn(|| 1).join().unwrap(); // the runtime (and copas's handler) exist
        let t = std::thread::Builder::new()
            .name("plain-thread".into())
            .stack_size(128 * 1024)
            .spawn(|| {
                copas::spawn(|| 1).join().unwrap();
                recurse(0, &mut [0u8; 1024])
            })
            .unwrap();
        let _ = t.join();
        unreachable!("the overflowing thread returned");
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "other_faults_reach_the_previous_handler",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("COPAS_THREAD_OVERFLOW_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("copas: task"), "stderr: {stderr}");
    assert!(
        stderr.contains("thread 'plain-thread'") && stderr.contains("has overflowed its stack"),
        "stderr: {stderr}"
    );
}

fn libc_sigabrt() -> i32 {
    6
}
