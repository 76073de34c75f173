//! A connection's bounded drop-oldest queue of shared frames, flushed with vectored writes.
//!
//! Invariants:
//! 1. `queued_bytes() <= max_bytes` and `len() <= max_events` after every `push`.
//! 2. The head frame, once partly written (`head_offset > 0`), is never evicted: dropping it
//!    would cut a frame in half on the wire and corrupt the stream.
//! 3. Frames leave in push order; an evicted frame is gone as a whole.
//! 4. The queue holds `Bytes` handles (refcounts), never copies of payloads; an empty outbox
//!    holds no heap memory.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

/// Most frames handed to one `writev`: bounds the stack array and the kernel's iovec walk
/// (Linux caps iovcnt at 1024; 64 frames already fill a socket buffer at typical sizes).
pub const MAX_IOV: usize = 64;

/// The two bounds of one outbox.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most frames queued.
    pub max_events: usize,
    /// Most unwritten bytes queued.
    pub max_bytes: usize,
}

/// What one `push` did beyond queueing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// Older frames dropped to make room.
    pub evicted: usize,
    /// The new frame itself was dropped: it could not fit beside a partly written head.
    pub rejected: bool,
}

/// What one flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Bytes the kernel accepted.
    pub bytes: usize,
    /// Frames completely written.
    pub frames: usize,
    /// `write_vectored` calls that the kernel accepted bytes from.
    pub writes: usize,
    /// `true` when the socket said `WouldBlock` with frames still queued: wait for the
    /// WRITABLE edge before writing again.
    pub blocked: bool,
}

/// Bounded queue of frames with an offset into the partly written head.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<Bytes>,
    head_offset: usize,
    queued: usize,
}

impl Outbox {
    /// An empty outbox (no allocation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames queued (including a partly written head).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Unwritten bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Queues `frame`, evicting the oldest whole unsent frames while a bound is exceeded.
    pub fn push(&mut self, frame: Bytes, bounds: Bounds) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        if frame.is_empty() {
            return outcome;
        }
        while !self.fits(frame.len(), bounds) {
            if !self.evict_oldest() {
                outcome.rejected = true;
                return outcome;
            }
            outcome.evicted += 1;
        }
        self.queued += frame.len();
        self.frames.push_back(frame);
        outcome
    }

    /// Queues `frame` with no bound: only for a connection's own small responses and stream
    /// prelude, which are bounded by the request that caused them.
    pub fn push_unbounded(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.queued += frame.len();
            self.frames.push_back(frame);
        }
    }

    fn fits(&self, len: usize, bounds: Bounds) -> bool {
        self.frames.len() < bounds.max_events && self.queued + len <= bounds.max_bytes
    }

    /// Drops the oldest frame that has not started to go out. Returns `false` when none.
    fn evict_oldest(&mut self) -> bool {
        let index = usize::from(self.head_offset > 0);
        match self.frames.remove(index) {
            Some(frame) => {
                self.queued -= frame.len();
                true
            }
            None => false,
        }
    }

    /// Fills `slices` with the unwritten queued bytes, head first; returns how many were set.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, frame) in self.frames.iter().enumerate().take(slices.len()) {
            let start = if i == 0 { self.head_offset } else { 0 };
            slices[i] = IoSlice::new(&frame[start..]);
            n += 1;
        }
        n
    }

    /// Marks `written` bytes as accepted by the kernel; returns the frames completed.
    pub fn advance(&mut self, mut written: usize) -> usize {
        let mut completed = 0;
        self.queued -= written.min(self.queued);
        while written > 0 {
            let Some(head) = self.frames.front() else { break };
            let left = head.len() - self.head_offset;
            if written >= left {
                written -= left;
                self.head_offset = 0;
                self.frames.pop_front();
                completed += 1;
            } else {
                self.head_offset += written;
                written = 0;
            }
        }
        if self.frames.is_empty() {
            // Invariant 4: an idle stream keeps no ring allocation.
            self.frames = VecDeque::new();
        }
        completed
    }

    /// Writes queued frames with vectored writes until empty or `WouldBlock`.
    /// Errors other than `WouldBlock`/`Interrupted` are returned; the connection is dead.
    pub fn flush_to<W: Write>(&mut self, sink: &mut W) -> io::Result<Flushed> {
        let mut flushed = Flushed { bytes: 0, frames: 0, writes: 0, blocked: false };
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let count = self.io_slices(&mut slices);
            match sink.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    flushed.bytes += n;
                    flushed.writes += 1;
                    flushed.frames += self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    flushed.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(flushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A socket that accepts at most `budget` bytes per call and then says `WouldBlock`
    /// once the total `capacity` is used, like a kernel send buffer.
    struct FakeSock {
        out: Vec<u8>,
        per_call: usize,
        capacity: usize,
    }

    impl Write for FakeSock {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let room = self.capacity.saturating_sub(self.out.len()).min(self.per_call);
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut taken = 0;
            for b in bufs {
                let n = b.len().min(room - taken);
                self.out.extend_from_slice(&b[..n]);
                taken += n;
                if taken == room {
                    break;
                }
            }
            Ok(taken)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const B: Bounds = Bounds { max_events: 4, max_bytes: 40 };

    fn f(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn drops_oldest_when_full_by_count() {
        let mut o = Outbox::new();
        for s in ["a", "b", "c", "d"] {
            assert_eq!(o.push(f(s), B).evicted, 0);
        }
        assert_eq!(o.push(f("e"), B).evicted, 1);
        let mut sock = FakeSock { out: vec![], per_call: 100, capacity: 100 };
        o.flush_to(&mut sock).unwrap();
        assert_eq!(sock.out, b"bcde");
        assert!(o.is_empty());
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn partial_head_is_never_evicted() {
        let mut o = Outbox::new();
        o.push(f("0123456789"), B);
        let mut sock = FakeSock { out: vec![], per_call: 3, capacity: 3 };
        let r = o.flush_to(&mut sock).unwrap();
        assert!(r.blocked);
        assert_eq!(o.queued_bytes(), 7);
        // Fill by bytes: the head (7 left) stays; the others rotate.
        for s in ["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc", "dddddddddd"] {
            o.push(f(s), B);
        }
        sock.capacity = 1000;
        sock.per_call = 1000;
        o.flush_to(&mut sock).unwrap();
        assert_eq!(sock.out, b"0123456789bbbbbbbbbbccccccccccdddddddddd".to_vec());
    }

    #[test]
    fn frame_that_cannot_fit_beside_partial_head_is_rejected() {
        let mut o = Outbox::new();
        o.push(f("0123456789012345678901234567890123456789"), B);
        let mut sock = FakeSock { out: vec![], per_call: 1, capacity: 1 };
        o.flush_to(&mut sock).unwrap();
        let r = o.push(f("xy"), B);
        assert!(r.rejected);
        assert_eq!(o.len(), 1);
    }

    proptest! {
        #[test]
        fn order_bounds_and_partial_heads_hold(ops in proptest::collection::vec((0u8..3, 1usize..30), 1..200)) {
            let bounds = Bounds { max_events: 5, max_bytes: 60 };
            let mut o = Outbox::new();
            let mut sock = FakeSock { out: vec![], per_call: 0, capacity: usize::MAX };
            let mut next = 0u32;
            for (op, n) in ops {
                match op {
                    0 | 1 => {
                        // Each frame is "<seq>:<padding>;" so the output can be checked.
                        let body = format!("{next}:{};", "x".repeat(n));
                        next += 1;
                        o.push(Bytes::from(body), bounds);
                        prop_assert!(o.len() <= bounds.max_events);
                        prop_assert!(o.queued_bytes() <= bounds.max_bytes);
                    }
                    _ => {
                        sock.per_call = n;
                        let before = sock.out.len();
                        let r = o.flush_to(&mut sock).unwrap();
                        prop_assert_eq!(r.bytes, sock.out.len() - before);
                        sock.capacity = sock.out.len(); // blocked until the next flush op
                        sock.capacity += n * 3;
                    }
                }
            }
            sock.per_call = usize::MAX;
            sock.capacity = usize::MAX;
            o.flush_to(&mut sock).unwrap();
            // Every frame arrived whole and in increasing sequence order.
            let text = String::from_utf8(sock.out).unwrap();
            let mut last: i64 = -1;
            for frame in text.split_terminator(';') {
                let (seq, pad) = frame.split_once(':').unwrap();
                prop_assert!(pad.bytes().all(|b| b == b'x'));
                let seq: i64 = seq.parse().unwrap();
                prop_assert!(seq > last);
                last = seq;
            }
        }
    }
}
