//! The async reference: a tokio echo server (`current_thread`, or multi-thread with
//! `--workers N`) with the echo example's protocol (each line comes back followed by `\n`, a `\r` before the `\n` dropped; the
//! line `quit` closes). Like copas it buffers output and writes it once no more input is
//! buffered, so both make one `write` per batch of pipelined lines.

use std::io;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::net::TcpListener;

/// A line longer than this closes the connection (the copas example's limit).
const MAX_LINE: usize = 64 * 1024;

/// A tokio runtime: `current_thread` for `workers` ≤ 1, else multi-thread with that many
/// workers.
pub(crate) fn runtime(workers: usize) -> io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_io()
            .build()
    }
}

/// Serves echo on `addr` until killed.
pub(crate) fn serve(addr: &str, workers: usize) -> io::Result<()> {
    let rt = runtime(workers)?;
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        println!("tokio echo listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tokio echo: accept: {e}");
                    continue;
                }
            };
            tokio::spawn(async move {
                // Resets and early closes are a client's business.
                let _ = handle(stream).await;
            });
        }
    })
}

/// Echoes lines on any byte stream (TCP here, TLS in `tls.rs`).
pub(crate) async fn handle<S: AsyncRead + AsyncWrite>(stream: S) -> io::Result<()> {
    let (r, w) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(16 * 1024, r);
    let mut writer = BufWriter::with_capacity(64 * 1024, w);
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 2)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line == b"quit" {
            break;
        }
        writer.write_all(&line).await?;
        writer.write_all(b"\n").await?;
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await
}
