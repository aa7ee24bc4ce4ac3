//! Code shared by the examples (each includes it with `#[path = "support/mod.rs"] mod
//! support;`): command-line parsing and error sentences in [`cli`], and the HTTP
//! request-head parsing of `http.rs` and `http_threads.rs` in [`http`], so the two servers
//! differ only in how they do I/O.
#![allow(dead_code)]

pub(crate) mod cli;
pub(crate) mod http;
