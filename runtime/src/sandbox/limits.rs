//! Per-call resource limits that need host state: the memory limiter and capped stdio capture.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Refuses any memory growth beyond `max` bytes and remembers that it did, so that the call
/// can report `memory_limit` rather than a generic trap.
pub struct MemoryLimiter {
    max: usize,
    exceeded: bool,
}

impl MemoryLimiter {
    pub fn new(max: u64) -> Self {
        MemoryLimiter {
            max: max as usize,
            exceeded: false,
        }
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = true;
            // An error (rather than `Ok(false)`) ends the call at once instead of letting the
            // guest's allocator turn it into an abort that looks like any other trap.
            wasmtime::bail!("memory limit of {} bytes exceeded", self.max);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Captures a stdout or stderr stream: keeps the first `cap` bytes, counts the rest, and never
/// fails the guest (a full pipe that reports "closed" would make `println!` trap).
#[derive(Clone)]
pub struct Capture(Arc<Mutex<CaptureInner>>);

struct CaptureInner {
    kept: Vec<u8>,
    total: u64,
    cap: usize,
}

impl Capture {
    pub fn new(cap: u64) -> Self {
        Capture(Arc::new(Mutex::new(CaptureInner {
            kept: Vec::new(),
            total: 0,
            cap: cap as usize,
        })))
    }

    fn push(&self, bytes: &[u8]) {
        let mut inner = self.0.lock().unwrap();
        inner.total += bytes.len() as u64;
        let room = inner.cap.saturating_sub(inner.kept.len());
        let take = room.min(bytes.len());
        inner.kept.extend_from_slice(&bytes[..take]);
    }

    /// What was kept (lossy UTF-8) and whether anything was dropped.
    pub fn contents(&self) -> (String, bool) {
        let inner = self.0.lock().unwrap();
        (
            String::from_utf8_lossy(&inner.kept).into_owned(),
            inner.total > inner.kept.len() as u64,
        )
    }

    pub fn total(&self) -> u64 {
        self.0.lock().unwrap().total
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_head_and_counts_the_rest() {
        let mut c = Capture::new(8);
        c.write(Bytes::from_static(b"hello ")).unwrap();
        c.write(Bytes::from_static(b"world")).unwrap();
        assert_eq!(c.contents(), ("hello wo".to_string(), true));
        assert_eq!(c.total(), 11);
    }
}
