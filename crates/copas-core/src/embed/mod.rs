//! Embedding copas in threaded, blocking or async programs: the bridge to futures
//! ([`block_on`]), the offload pool ([`unblock`]), remote spawns on a [`Handle`]
//! ([`RemoteJoinHandle`]), and a runtime on a thread of its own ([`RuntimeThread`]).
//!
//! Everything here is built on the public scheduler API plus the cross-thread inbox
//! (`remote.rs`: [`Handle::spawn_boxed`](crate::Handle::spawn_boxed), remote exit): a waiting task parks with a [`KeepAlive`](crate::hooks::KeepAlive)
//! guard and is woken from any thread with [`Task::unpark`](crate::Task::unpark); code
//! outside a task drives the loop and is woken through a remote wake-up of the MAIN pseudo-task.

mod block_on;
mod oneshot;
mod remote;
mod thread;
mod unblock;

pub use block_on::block_on;
pub use remote::RemoteJoinHandle;
pub use thread::{resolve, RuntimeThread};
pub use unblock::{set_max_unblock_threads, unblock, DEFAULT_MAX_UNBLOCK_THREADS};
