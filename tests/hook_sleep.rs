//! `std::thread::sleep` (and libc's sleeps) inside tasks suspend the task, not the
//! thread, once `copas_hook::install()` has run.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn install() {
    copas_hook::install().expect("hooks install on Linux/glibc");
}

#[test]
fn std_sleep_in_100_tasks_sleeps_them_all_at_once() {
    install();
    let asleep = Rc::new(Cell::new(0usize));
    let woke = Rc::new(Cell::new(0usize));
    let mut sleepers = Vec::new();
    for _ in 0..100 {
        let (asleep, woke) = (asleep.clone(), woke.clone());
        sleepers.push(copas::spawn(move || {
            asleep.set(asleep.get() + 1);
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(100));
            woke.set(woke.get() + 1);
            t.elapsed()
        }));
    }
    // The ticker runs while they sleep; it records whether it saw all 100 asleep at once.
    let ticker = {
        let (asleep, woke) = (asleep.clone(), woke.clone());
        copas::spawn(move || {
            let mut ticks_while_all_asleep = 0;
            while woke.get() < 100 {
                if asleep.get() == 100 && woke.get() == 0 {
                    ticks_while_all_asleep += 1;
                }
                copas::sleep(Duration::from_millis(1)).unwrap();
            }
            ticks_while_all_asleep
        })
    };
    copas::run().unwrap();
    assert!(
        ticker.join().unwrap() > 0,
        "the ticker never ran while all 100 slept"
    );
    for s in sleepers {
        assert!(
            s.join().unwrap() >= Duration::from_millis(100),
            "a sleep ended early"
        );
    }
}

#[test]
fn libc_sleeps_yield_too() {
    install();
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let o = order.clone();
    let a = copas::spawn(move || {
        o.borrow_mut().push("usleep start");
        // SAFETY: usleep and nanosleep take no pointers we own beyond `ts`.
        unsafe { libc::usleep(20_000) };
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        // SAFETY: `ts` is valid; no remainder is asked for.
        let r = unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        o.borrow_mut().push("sleeps done");
        r
    });
    let o = order.clone();
    copas::spawn(move || o.borrow_mut().push("other task ran"));
    copas::run().unwrap();
    assert_eq!(a.join().unwrap(), 0);
    assert_eq!(
        *order.borrow(),
        ["usleep start", "other task ran", "sleeps done"]
    );
}

#[test]
fn invalid_nanosleep_is_einval() {
    install();
    let h = copas::spawn(|| {
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000_000,
        };
        // SAFETY: `ts` is valid.
        let r = unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        (r, std::io::Error::last_os_error().raw_os_error())
    });
    copas::run().unwrap();
    assert_eq!(h.join().unwrap(), (-1, Some(libc::EINVAL)));
}

#[test]
fn passthrough_really_blocks_the_thread() {
    install();
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let o = order.clone();
    copas::spawn(move || {
        copas_hook::passthrough(|| std::thread::sleep(Duration::from_millis(20)));
        o.borrow_mut().push("passthrough sleep done");
    });
    let o = order.clone();
    copas::spawn(move || o.borrow_mut().push("other task ran"));
    copas::run().unwrap();
    assert_eq!(
        *order.borrow(),
        ["passthrough sleep done", "other task ran"]
    );
}

#[test]
fn sleep_outside_tasks_is_the_real_one() {
    install();
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    assert!(t.elapsed() >= Duration::from_millis(20));
}
