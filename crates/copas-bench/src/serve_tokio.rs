//! The async reference: a tokio `current_thread` echo server with the echo example's
//! protocol (each line comes back followed by `\n`, a `\r` before the `\n` dropped; the
//! line `quit` closes). Like copas it buffers output and writes it once no more input is
//! buffered, so both make one `write` per batch of pipelined lines.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

/// A line longer than this closes the connection (the copas example's limit).
const MAX_LINE: usize = 64 * 1024;

/// Serves echo on `addr` until killed.
pub(crate) fn serve(addr: &str) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
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

async fn handle(mut stream: TcpStream) -> io::Result<()> {
    let (r, w) = stream.split();
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
