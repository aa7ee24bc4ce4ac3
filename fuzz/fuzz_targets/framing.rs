//! Differential fuzzing of the receive framing (`receive_line`/`receive_exact`/
//! `receive_some` on the read buffer) against a naive reference that keeps a plain `Vec`
//! and searches it from the start on every call.
//!
//! The input is a little program: each instruction is an opcode byte and an argument
//! byte; "feed" instructions take their data from the bytes that follow, so the byte
//! stream arrives in pieces of every size between the receive calls.
//!
//! | opcode % 8 | instruction                                                |
//! |------------|------------------------------------------------------------|
//! | 0, 1       | feed the next `arg` bytes of the input                     |
//! | 2, 3       | `take_line(arg)`; with bit 7 of the opcode, no limit       |
//! | 4          | `take_exact(arg)`                                          |
//! | 5          | `take_some(arg)`                                           |
//! | 6          | `consume(arg)`                                             |
//! | 7          | `take_line(arg * 64)`                                      |
//!
//! After every instruction the outputs and the bytes left buffered must be the
//! reference's.
#![no_main]

use copas_net::__fuzz::{FramingBuffer, Line};
use libfuzzer_sys::fuzz_target;

/// The naive reference implementation.
#[derive(Default)]
struct Reference {
    data: Vec<u8>,
}

impl Reference {
    fn take_line(&mut self, max: usize) -> Line {
        match self.data.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                let mut content = &self.data[..nl];
                if let [rest @ .., b'\r'] = content {
                    content = rest;
                }
                if content.len() > max {
                    return Line::TooLong;
                }
                let line = content.to_vec().into();
                self.data.drain(..=nl);
                Line::Complete(line)
            }
            None => {
                // A trailing '\r' may be the start of "\r\n": it is not content yet.
                let pending = self.data.len() - usize::from(self.data.ends_with(b"\r"));
                if pending > max {
                    Line::TooLong
                } else {
                    Line::Incomplete
                }
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        self.data.drain(..n.min(self.data.len())).collect()
    }
}

fuzz_target!(|input: &[u8]| {
    let mut buf = FramingBuffer::default();
    let mut reference = Reference::default();
    let mut program = input.iter().copied();
    while let Some(op) = program.next() {
        let arg = usize::from(program.next().unwrap_or(0));
        match op % 8 {
            0 | 1 => {
                let piece: Vec<u8> = program.by_ref().take(arg).collect();
                buf.push(&piece);
                reference.data.extend_from_slice(&piece);
            }
            2 | 3 | 7 => {
                let max = match op % 8 {
                    7 => arg * 64,
                    _ if op & 0x80 != 0 => usize::MAX,
                    _ => arg,
                };
                assert_eq!(
                    buf.take_line(max),
                    reference.take_line(max),
                    "line, max {max}"
                );
            }
            4 => {
                let expect = (reference.data.len() >= arg).then(|| reference.take(arg));
                assert_eq!(
                    buf.take_exact(arg).as_deref(),
                    expect.as_deref(),
                    "exact {arg}"
                );
            }
            5 => assert_eq!(
                &buf.take_some(arg)[..],
                &reference.take(arg)[..],
                "some {arg}"
            ),
            _ => {
                buf.consume(arg);
                reference.take(arg);
            }
        }
        assert_eq!(buf.buffered(), &reference.data[..], "bytes left buffered");
    }
});
