//! A command's output, kept in bounded memory whatever the endpoint sends.
//!
//! An endpoint can print without end (`yes`, a looping installer, a hostile
//! host); the controller must not grow with it, because a controller killed
//! for memory is a SIGKILL and nothing gets rolled back. So every transport
//! collects each stream into an [`OutputBuffer`], which keeps the first
//! [`HEAD_KEPT`] bytes and the last [`TAIL_KEPT`] bytes and only counts the
//! rest, and hands the runner a [`BoundedOutput`].
//!
//! The head is large because captures parse it (a `Get-MpComputerStatus`
//! JSON is a few KB, a KESL settings export a few hundred KB at most); the
//! tail is the journal's cap, because the end of the output (the error)
//! is what a record shows. A capture that needs more than the head is an
//! error naming the step, never a parse of a cut text.
//!
//! The live [`OutputSink`] is bounded too: a reader slower than the endpoint
//! loses chunks (they are counted in the next delivered chunk), never the
//! run's memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::Stream;

/// Bytes kept from the start of each stream.
pub const HEAD_KEPT: usize = CAPTURE_LIMIT - TAIL_KEPT;
/// The most output a capture can parse: up to this much, a stream is kept
/// whole (head and tail meet).
pub const CAPTURE_LIMIT: usize = 1024 * 1024;
/// Bytes kept from the end of each stream (the journal's cap per record).
pub const TAIL_KEPT: usize = 64 * 1024;
/// Bytes kept from the start of stderr, which no capture reads.
pub const STDERR_HEAD_KEPT: usize = 64 * 1024;

/// Collects one stream: the head in full, then a rolling tail.
#[derive(Debug)]
pub struct OutputBuffer {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    head_limit: usize,
    tail_limit: usize,
}

impl Default for OutputBuffer {
    fn default() -> Self {
        OutputBuffer::with_limits(HEAD_KEPT, TAIL_KEPT)
    }
}

impl OutputBuffer {
    /// A buffer keeping `head` bytes from the start and `tail` from the end.
    pub fn with_limits(head: usize, tail: usize) -> Self {
        OutputBuffer {
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
            head_limit: head,
            tail_limit: tail,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.head_limit - self.head.len();
        if room > 0 {
            let taken = room.min(data.len());
            self.head.extend_from_slice(&data[..taken]);
            data = &data[taken..];
        }
        if data.len() >= self.tail_limit {
            self.tail.clear();
            data = &data[data.len() - self.tail_limit..];
        }
        let overflow = (self.tail.len() + data.len()).saturating_sub(self.tail_limit);
        self.tail.drain(..overflow);
        self.tail.extend(data);
    }

    pub fn finish(mut self) -> BoundedOutput {
        let head_len = self.head.len();
        let mut kept = self.head;
        kept.extend_from_slice(self.tail.make_contiguous());
        BoundedOutput {
            kept,
            head_len,
            total_len: self.total,
        }
    }
}

/// One stream's output as kept: all of it, or its head and its tail.
///
/// It derefs to the kept bytes (head then tail, glued), which is the whole
/// output unless [`BoundedOutput::is_truncated`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundedOutput {
    kept: Vec<u8>,
    head_len: usize,
    total_len: u64,
}

impl BoundedOutput {
    /// Output kept whole: bounded already by whoever made it.
    pub fn whole(bytes: Vec<u8>) -> Self {
        BoundedOutput {
            head_len: bytes.len(),
            total_len: bytes.len() as u64,
            kept: bytes,
        }
    }

    /// How many bytes the command wrote to this stream.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Some output between the head and the tail was dropped.
    pub fn is_truncated(&self) -> bool {
        self.total_len > self.kept.len() as u64
    }

    /// Bytes dropped between the head and the tail.
    pub fn cut_len(&self) -> u64 {
        self.total_len - self.kept.len() as u64
    }

    pub fn head(&self) -> &[u8] {
        &self.kept[..self.head_len]
    }

    pub fn tail(&self) -> &[u8] {
        &self.kept[self.head_len..]
    }

    /// The whole output, if nothing was dropped.
    pub fn complete(&self) -> Option<&[u8]> {
        (!self.is_truncated()).then_some(&self.kept[..])
    }

    /// The output as text (lossy UTF-8), the cut marked where it was.
    pub fn to_text(&self) -> String {
        if !self.is_truncated() {
            return String::from_utf8_lossy(&self.kept).into_owned();
        }
        format!(
            "{}\n{}\n{}",
            String::from_utf8_lossy(self.head()),
            cut_note(self.cut_len()),
            String::from_utf8_lossy(self.tail())
        )
    }
}

/// What a step record (journal, reports) keeps of a stream: its first
/// [`RECORD_HEAD`] and last [`RECORD_TAIL`] bytes, 64 KiB in all.
pub const RECORD_HEAD: usize = 16 * 1024;
pub const RECORD_TAIL: usize = 48 * 1024;
/// Text redacted beyond each cut, so a secret lying across it is masked
/// before it is cut (secrets are far shorter than this).
const REDACT_MARGIN: usize = 4 * 1024;

impl BoundedOutput {
    /// The output as a step record keeps it, masked and decoded by `redact`
    /// (bytes in, text out): whole if it fits, else its head and tail around
    /// a note saying how many bytes are left out.
    pub fn excerpt(&self, redact: impl Fn(&[u8]) -> String) -> String {
        if self.total_len <= (RECORD_HEAD + RECORD_TAIL) as u64 && !self.is_truncated() {
            return redact(&self.kept);
        }
        let head_end = (RECORD_HEAD + REDACT_MARGIN).min(self.kept.len());
        let head = redact(&self.kept[..head_end]);
        let tail_start = self.kept.len().saturating_sub(RECORD_TAIL + REDACT_MARGIN);
        let tail = redact(&self.kept[tail_start..]);
        let mut head_cut = RECORD_HEAD.min(head.len());
        while !head.is_char_boundary(head_cut) {
            head_cut -= 1;
        }
        let mut tail_cut = tail.len().saturating_sub(RECORD_TAIL);
        while !tail.is_char_boundary(tail_cut) {
            tail_cut += 1;
        }
        let left_out = self
            .total_len
            .saturating_sub((head_cut + tail.len() - tail_cut) as u64);
        format!(
            "{}\n{}\n{}",
            &head[..head_cut],
            cut_note(left_out),
            &tail[tail_cut..]
        )
    }
}

/// The line that stands where output was dropped.
pub fn cut_note(bytes: u64) -> String {
    format!("[... {bytes} bytes of output not kept ...]")
}

impl std::ops::Deref for BoundedOutput {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.kept
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for BoundedOutput {
    fn eq(&self, other: &&[u8; N]) -> bool {
        !self.is_truncated() && self.kept == other[..]
    }
}

/// A piece of output, streamed while the command runs.
#[derive(Debug, Clone)]
pub struct OutputChunk {
    pub stream: Stream,
    pub data: bytes::Bytes,
    /// Bytes of this command's output dropped before this chunk because the
    /// reader was behind.
    pub skipped: u64,
}

/// Chunks a sink holds before it drops new ones.
pub const SINK_CHUNKS: usize = 256;

/// Where a session sends output as it arrives (for live progress and logs).
/// Bounded: when the reader is behind, chunks are dropped and counted, so
/// the sink never holds more than [`SINK_CHUNKS`] chunks. The kept output is
/// also returned in the [`super::Execution`].
#[derive(Debug, Clone)]
pub struct OutputSink {
    tx: mpsc::Sender<OutputChunk>,
    skipped: Arc<AtomicU64>,
}

impl OutputSink {
    /// A sink and the receiver of its chunks.
    pub fn channel() -> (OutputSink, mpsc::Receiver<OutputChunk>) {
        let (tx, rx) = mpsc::channel(SINK_CHUNKS);
        let sink = OutputSink {
            tx,
            skipped: Arc::new(AtomicU64::new(0)),
        };
        (sink, rx)
    }

    /// Offers a chunk; a full sink drops it and counts its bytes.
    pub fn offer(&self, stream: Stream, data: bytes::Bytes) {
        let len = data.len() as u64;
        let skipped = self.skipped.swap(0, Ordering::Relaxed);
        let chunk = OutputChunk {
            stream,
            data,
            skipped,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(chunk) {
            self.skipped.fetch_add(skipped + len, Ordering::Relaxed);
        }
    }
}

/// Collects both streams of a command, forwarding to a sink as they come.
#[derive(Debug)]
pub struct OutputCollector {
    pub stdout: OutputBuffer,
    pub stderr: OutputBuffer,
    sink: Option<OutputSink>,
}

impl Default for OutputCollector {
    fn default() -> Self {
        OutputCollector::new(None)
    }
}

impl OutputCollector {
    pub fn new(sink: Option<OutputSink>) -> Self {
        OutputCollector {
            stdout: OutputBuffer::default(),
            stderr: OutputBuffer::with_limits(STDERR_HEAD_KEPT, TAIL_KEPT),
            sink,
        }
    }

    /// Keeps `data` of `stream` and forwards it (unless `forward` is false).
    pub fn push(&mut self, stream: Stream, data: &[u8], forward: bool) {
        match stream {
            Stream::Stdout => self.stdout.push(data),
            Stream::Stderr => self.stderr.push(data),
        }
        if forward && let Some(sink) = &self.sink {
            sink.offer(stream, bytes::Bytes::copy_from_slice(data));
        }
    }

    /// The sink, for what is forwarded after collecting ends.
    pub fn sink(&self) -> Option<OutputSink> {
        self.sink.clone()
    }

    /// Forwards `data` without keeping it (already kept, or not to be kept).
    pub fn forward(&self, stream: Stream, data: bytes::Bytes) {
        if let Some(sink) = &self.sink {
            sink.offer(stream, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut buffer = OutputBuffer::with_limits(4, 3);
        buffer.push(b"abc");
        buffer.push(b"def");
        let out = buffer.finish();
        assert!(!out.is_truncated());
        assert_eq!(&out[..], b"abcdef");
        assert_eq!(out.complete(), Some(&b"abcdef"[..]));
        assert_eq!(out.to_text(), "abcdef");
    }

    #[test]
    fn a_flood_keeps_its_head_and_tail_and_counts_the_rest() {
        let mut buffer = OutputBuffer::with_limits(4, 3);
        for piece in [&b"01"[..], b"234", b"56789", b"abcdefgh", b"ij"] {
            buffer.push(piece);
        }
        let out = buffer.finish();
        assert_eq!(out.total_len(), 20);
        assert!(out.is_truncated());
        assert_eq!(out.head(), b"0123");
        assert_eq!(out.tail(), b"hij");
        assert_eq!(out.cut_len(), 13);
        assert_eq!(out.complete(), None);
        assert_eq!(
            out.to_text(),
            "0123\n[... 13 bytes of output not kept ...]\nhij"
        );
    }

    #[test]
    fn a_record_keeps_a_head_and_a_tail_redacted_across_the_cut() {
        let mut buffer = OutputBuffer::default();
        buffer.push(b"first line\n");
        let secret = "hunter2-secret";
        // The secret straddles where the record's head ends.
        let filler = "x".repeat(RECORD_HEAD - 11 - 5);
        buffer.push(format!("{filler}{secret}\n").as_bytes());
        for _ in 0..100 {
            buffer.push(&[b'y'; 100_000]);
        }
        buffer.push(b"\nthe last line\n");
        let out = buffer.finish();
        let record = out.excerpt(|b| String::from_utf8_lossy(b).replace(secret, "***"));
        assert!(record.starts_with("first line\n"), "{}", &record[..20]);
        assert!(record.ends_with("y\nthe last line\n"));
        assert!(!record.contains("hunter"), "no piece of the secret is left");
        let note = cut_note(out.total_len() - (RECORD_HEAD + RECORD_TAIL) as u64);
        assert!(record.contains(&format!("\n{note}\n")), "{note}");
        assert!(record.len() < RECORD_HEAD + RECORD_TAIL + 100);
        let small = BoundedOutput::whole(b"short".to_vec());
        assert_eq!(
            small.excerpt(|b| String::from_utf8_lossy(b).to_uppercase()),
            "SHORT"
        );
    }

    #[test]
    fn memory_stays_at_the_limits() {
        let mut buffer = OutputBuffer::with_limits(1024, 512);
        let piece = vec![b'y'; 10_000];
        for _ in 0..1_000 {
            buffer.push(&piece);
        }
        assert!(buffer.head.capacity() <= 2048 && buffer.tail.capacity() <= 20_000);
        assert_eq!(buffer.finish().total_len(), 10_000_000);
    }

    #[test]
    fn a_full_sink_drops_and_counts() {
        let (sink, mut rx) = OutputSink::channel();
        for _ in 0..SINK_CHUNKS + 10 {
            sink.offer(Stream::Stdout, bytes::Bytes::from_static(b"xy"));
        }
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, SINK_CHUNKS);
        sink.offer(Stream::Stdout, bytes::Bytes::from_static(b"z"));
        let next = rx.try_recv().unwrap();
        assert_eq!((next.skipped, &next.data[..]), (20, &b"z"[..]));
    }
}
