//! The `tracing` feature: spans per task and per connection, events for timeouts,
//! cancellations, panics and blocked-loop warnings, captured by a test subscriber.
#![cfg(feature = "tracing")]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// What the subscriber saw: spans ("name{fields}") and events ("message [in span]").
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<String>>>);

#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Seen {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        let line = format!("span {} {}", attrs.metadata().name(), f.0);
        self.0.lock().unwrap().push(line);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let span = ctx
            .event_span(event)
            .map(|s| s.name().to_owned())
            .unwrap_or_default();
        let line = format!("event {} in:{span} {}", event.metadata().level(), f.0);
        self.0.lock().unwrap().push(line);
    }
}

fn capture(body: impl FnOnce() + Send + 'static) -> Vec<String> {
    let seen = Seen::default();
    let out = seen.clone();
    common::guard(move || {
        let subscriber = tracing_subscriber::registry().with(seen);
        tracing::subscriber::with_default(subscriber, body);
    });
    let seen = out.0.lock().unwrap().clone();
    seen
}

fn has(seen: &[String], all: &[&str]) -> bool {
    seen.iter().any(|l| all.iter().all(|w| l.contains(w)))
}

#[test]
fn tasks_and_connections_get_spans_and_timeouts_cancellations_panics_get_events() {
    let seen = capture(|| {
        let server = copas::ServerBuilder::new()
            .name("echo")
            .read_timeout(Duration::from_millis(50))
            .serve("127.0.0.1:0", |mut conn| {
                conn.receive_line()?;
                Ok(())
            })
            .unwrap();
        let addr = server.local_addr();
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let _ = c.write_all(b"late\n");
        });
        let sleeper = copas::Builder::new()
            .name("sleeper".into())
            .spawn(|| copas::sleep(Duration::from_secs(30)))
            .unwrap();
        let panicker = copas::Builder::new()
            .name("panicker".into())
            .error_handler(|_| {})
            .spawn(|| panic!("on purpose"))
            .unwrap();
        let rt = copas::Runtime::current();
        for _ in 0..3 {
            rt.step(Some(Duration::from_millis(5))).unwrap();
        }
        sleeper.cancel();
        copas::sleep(Duration::from_millis(200)).unwrap();
        assert!(panicker.join().is_err());
        let _ = sleeper.join();
        server.stop();
        client.join().unwrap();
    });
    assert!(
        has(&seen, &["span task", "task.name=\"sleeper\""]),
        "{seen:#?}"
    );
    assert!(
        has(
            &seen,
            &["span connection", "task.name=\"echo\"", "peer=127.0.0.1:"]
        ),
        "{seen:#?}"
    );
    assert!(
        has(&seen, &["event DEBUG in:task", "task cancelled"]),
        "{seen:#?}"
    );
    assert!(
        has(&seen, &["event DEBUG in:connection", "a wait timed out"]),
        "{seen:#?}"
    );
    assert!(
        has(
            &seen,
            &["event ERROR in:task", "problem=\"panicked\"", "on purpose"]
        ),
        "{seen:#?}"
    );
}

#[test]
fn the_blocked_loop_warning_is_an_event() {
    let seen = capture(|| {
        copas::Runtime::current().set_block_warning(Some(Duration::from_millis(20)));
        let h = copas::Builder::new()
            .name("blocker".into())
            .spawn(|| std::thread::sleep(Duration::from_millis(200)))
            .unwrap();
        copas::run().unwrap();
        h.join().unwrap();
    });
    assert!(
        has(
            &seen,
            &["event WARN", "task.name=\"blocker\"", "without yielding"]
        ),
        "{seen:#?}"
    );
}
