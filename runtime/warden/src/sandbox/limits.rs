//! Per-call resource limits that need host state: the memory limiter and capped stdio capture.

use crate::faults::{Fault, injected};
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Core module instances, linear memories and tables one call's component may have. The
/// pooling allocator refuses a component with more when it is compiled, and the limiter
/// refuses them when it is instantiated, so that one call never takes more than its share of
/// the pool's slots.
pub const MAX_INSTANCES: u32 = 32;
pub const MAX_MEMORIES: u32 = 4;
pub const MAX_TABLES: u32 = 32;
/// Elements of any one table.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Host handles (open files, streams, pollables, HTTP fields and requests…) one call may
/// hold at once. Every concurrent call holds at most this many host file descriptors.
pub const MAX_HANDLES: usize = 256;
/// Bytes of one `wasi:http` fields resource, in memory (about half of that on the wire); with
/// `MAX_HANDLES`, this bounds the host memory a call's headers can take.
pub const MAX_FIELDS_BYTES: usize = 32 << 10;
/// Bytes of an error message a tool returns (or a command's last stderr line) that are kept.
pub const MAX_ERROR_TEXT: usize = 4 << 10;

/// Refuses memory growth that would take the call's memories together beyond `max` bytes,
/// and remembers that it did, so that the call can report `memory_limit` rather than a
/// generic trap. Also caps instances, memories and tables.
pub struct MemoryLimiter {
    max: usize,
    /// Bytes of every linear memory of the call, together.
    total: usize,
    /// The growth last allowed, taken back if the memory then fails to grow.
    pending: usize,
    exceeded: bool,
}

impl MemoryLimiter {
    pub fn new(max: u64) -> Self {
        MemoryLimiter {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            total: 0,
            pending: 0,
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
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A memory is created by a call with `current` 0, so the sum covers every memory.
        let growth = desired.saturating_sub(current);
        let total = self.total.saturating_add(growth);
        if total > self.max && !injected(Fault::NoMemoryLimit) {
            self.exceeded = true;
            // An error (rather than `Ok(false)`) ends the call at once instead of letting the
            // guest's allocator turn it into an abort that looks like any other trap.
            wasmtime::bail!(
                "memory limit of {} bytes exceeded: the call's memories would take {total} bytes",
                self.max
            );
        }
        self.total = total;
        self.pending = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.total -= std::mem::take(&mut self.pending);
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES as usize
    }
}

/// The call's wasm used up its CPU budget.
#[derive(Debug, thiserror::Error)]
#[error("the tool used up its CPU time of {} and was stopped", crate::units::format_duration(*budget))]
pub struct CpuExhausted {
    pub budget: Duration,
}

/// Measures the time a call's wasm runs for. At every epoch tick the guest yields to the
/// executor, so that a spinning tool neither holds a worker thread nor escapes its wall-clock
/// timeout and cancellation; the time from when it last started or resumed to the tick is
/// charged, and once `budget` is used the call ends with `CpuExhausted`. Time waiting for a
/// worker after a yield is not charged; a wait on host I/O between two ticks is charged at
/// most `max_charge`. (Counting ticks instead would undercount when a loaded machine delays
/// the epoch thread.)
pub struct CpuMeter {
    used: Duration,
    budget: Duration,
    max_charge: Duration,
    since: Arc<Mutex<Instant>>,
}

/// Marks when the guest resumes after a yield.
#[derive(Debug)]
pub struct Resumed(Arc<Mutex<Instant>>);

impl Resumed {
    pub fn at(self, when: Instant) {
        *self.0.lock().unwrap() = when;
    }
}

impl CpuMeter {
    /// `start`: when the guest starts running; `tick`: the epoch tick.
    pub fn new(budget: Duration, tick: Duration, start: Instant) -> Self {
        CpuMeter {
            used: Duration::ZERO,
            budget,
            max_charge: tick * 5,
            since: Arc::new(Mutex::new(start)),
        }
    }

    /// A tick at `now`: the guest yields and goes on (marking its resumption), or its budget
    /// is spent.
    pub fn tick(&mut self, now: Instant) -> Result<Resumed, CpuExhausted> {
        let since = *self.since.lock().unwrap();
        self.used += now.saturating_duration_since(since).min(self.max_charge);
        if self.used >= self.budget {
            return Err(CpuExhausted {
                budget: self.budget,
            });
        }
        Ok(Resumed(self.since.clone()))
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), marked as cut when it was.
pub fn bound_text(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut: {} bytes in all]", &text[..end], text.len())
}

/// Captures a stdout or stderr stream: keeps the first `cap` bytes and the last `TAIL`,
/// counts the rest, and never fails the guest (a full pipe that reports "closed" would make
/// `println!` trap).
#[derive(Clone)]
pub struct Capture(Arc<Mutex<CaptureInner>>);

struct CaptureInner {
    kept: Vec<u8>,
    /// The last bytes written (a traceback comes last, past whatever the head kept).
    tail: std::collections::VecDeque<u8>,
    total: u64,
    cap: usize,
    /// Its lines, told as they are written (a caller following the call).
    lines: Option<crate::call::events::Lines>,
}

/// How much of a stream's end is kept for the message of a tool that trapped.
pub const TAIL: usize = 1024;

impl Capture {
    pub fn new(cap: u64) -> Self {
        Capture(Arc::new(Mutex::new(CaptureInner {
            kept: Vec::new(),
            tail: std::collections::VecDeque::new(),
            total: 0,
            cap: cap as usize,
            lines: None,
        })))
    }

    /// The same capture, telling `listener` (if any) each line written.
    pub fn told_to(self, listener: crate::call::events::Listener) -> Self {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lines = listener.map(crate::call::events::Lines::new);
        self
    }

    fn push(&self, bytes: &[u8]) {
        let mut inner = self.0.lock().unwrap();
        inner.total += bytes.len() as u64;
        let room = inner.cap.saturating_sub(inner.kept.len());
        let take = room.min(bytes.len());
        inner.kept.extend_from_slice(&bytes[..take]);
        let last = &bytes[bytes.len().saturating_sub(TAIL)..];
        inner.tail.extend(last);
        let over = inner.tail.len().saturating_sub(TAIL);
        inner.tail.drain(..over);
        if let Some(lines) = &mut inner.lines {
            lines.feed(bytes);
        }
    }

    /// The last lines written (at most `TAIL` bytes, from a line's start when one is in
    /// them), lossy UTF-8, trimmed; none if nothing was.
    pub fn tail(&self) -> Option<String> {
        let inner = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes: Vec<u8> = inner.tail.iter().copied().collect();
        // Cut after the first line break when the stream began earlier, unless nothing but
        // a line break would be left.
        let from = match inner.total > bytes.len() as u64 {
            true => bytes
                .iter()
                .position(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
                .min(bytes.len()),
            false => 0,
        };
        let from = match bytes[from..].iter().all(u8::is_ascii_whitespace) {
            true => 0,
            false => from,
        };
        let text = String::from_utf8_lossy(&bytes[from..]).trim().to_string();
        (!text.is_empty()).then_some(text)
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
        assert_eq!(c.tail().as_deref(), Some("hello world"));
    }

    #[test]
    fn capture_keeps_the_last_lines_for_a_trap() {
        let mut c = Capture::new(8);
        assert_eq!(c.tail(), None);
        for i in 0..500 {
            c.write(Bytes::from(format!("line {i}\n"))).unwrap();
        }
        c.write(Bytes::from_static(
            "Traceback: caf\u{e9} failed\n".as_bytes(),
        ))
        .unwrap();
        let tail = c.tail().unwrap();
        assert!(tail.len() <= TAIL);
        assert!(tail.starts_with("line "), "cut at a line's start: {tail}");
        assert!(tail.ends_with("Traceback: caf\u{e9} failed"), "{tail}");
        // One write longer than the tail keeps its end.
        c.write(Bytes::from(vec![b'x'; 3 * TAIL])).unwrap();
        assert_eq!(c.tail().unwrap(), "x".repeat(TAIL));
    }

    #[test]
    fn memory_is_limited_across_all_memories() {
        use wasmtime::ResourceLimiter as _;
        let mut l = MemoryLimiter::new(100);
        assert!(l.memory_growing(0, 40, None).unwrap());
        assert!(l.memory_growing(0, 40, None).unwrap());
        // A growth the memory then fails to make is not counted.
        assert!(l.memory_growing(40, 60, None).unwrap());
        l.memory_grow_failed(wasmtime::format_err!("no room"))
            .unwrap();
        assert!(l.memory_growing(40, 60, None).unwrap());
        assert!(!l.exceeded());
        assert!(l.memory_growing(0, 1, None).is_err());
        assert!(l.exceeded());
    }

    #[test]
    fn the_cpu_meter_charges_running_time_only() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut m = CpuMeter::new(ms(100), ms(10), t0);
        m.tick(t0 + ms(10)).unwrap().at(t0 + ms(200)); // 10 ms run, then waited for a worker
        m.tick(t0 + ms(220)).unwrap().at(t0 + ms(220)); // 20 ms run
        // 10 s of host I/O before the next tick is charged as 50 ms: 80 ms in all.
        m.tick(t0 + ms(10_220)).unwrap().at(t0 + ms(10_220));
        assert_eq!(m.tick(t0 + ms(10_240)).unwrap_err().budget, ms(100));
    }

    #[test]
    fn text_is_cut_at_a_character_boundary_and_marked() {
        assert_eq!(bound_text("short".into(), 8), "short");
        assert_eq!(bound_text("ééééé".into(), 5), "éé… [cut: 10 bytes in all]");
    }
}
