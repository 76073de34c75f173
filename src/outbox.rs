//! A connection's bounded queue of shared frames with class-aware eviction, flushed with
//! vectored writes.
//!
//! Invariants:
//! 1. `queued_bytes() <= max_bytes` and `len() <= max_events` of the bounds given, after every
//!    bounded push and every [`Outbox::trim`] (pinned frames — responses, stream head, gap
//!    notices — are bounded by what caused them). A caller may push under larger bounds and
//!    trim to smaller ones later (a stream whose client stopped keeping up).
//! 2. The head frame, once partly written (`head_offset > 0`), is never evicted: dropping it
//!    would cut a frame in half on the wire and corrupt the stream. Pinned frames are never
//!    evicted either.
//! 3. Frames leave in push order; an evicted frame is gone as a whole. A `latest` event
//!    replaces (conflates) a queued, unstarted event with the same topic and key: the old one
//!    is removed and the new one appended, so ids on the wire still increase.
//! 4. Eviction takes the oldest evictable frame of the cheapest class present: droppable
//!    (and heartbeats), then latest, then reliable — and never one of a higher class than
//!    the frame being pushed, which is dropped instead.
//! 5. Every reliable event that leaves the queue unsent (evicted, or refused for lack of room)
//!    joins the pending gap range; at the next flush an `event: gap` frame with
//!    `{"from","to"}` is placed before the first unsent evictable frame (merged into an unsent
//!    notice already there: at most one waits), so the client learns of the loss before it
//!    receives anything newer. The notice is placed within the bounds too.
//! 6. The queue holds refcounted handles, never copies of payloads; an empty outbox holds no
//!    heap memory.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use bytes::Bytes;

use crate::hub::Event;
use crate::publish::Class;

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

/// What one push did beyond queueing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// Older frames dropped to make room, by [`Class::index`].
    pub evicted: [u32; 3],
    /// A queued older value with the same topic and key was replaced.
    pub conflated: bool,
    /// The new frame itself was dropped: it could not fit beside pinned or partly written
    /// frames.
    pub rejected: bool,
}

impl PushOutcome {
    /// Frames evicted, all classes.
    pub fn evicted_total(&self) -> u64 {
        self.evicted.iter().map(|&n| u64::from(n)).sum()
    }
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
    /// Gap notices placed in front of the queue by this flush.
    pub gaps: usize,
    /// Frames evicted to make room for that notice, by [`Class::index`].
    pub evicted: [u32; 3],
    /// `true` when the socket said `WouldBlock` with frames still queued: wait for the
    /// WRITABLE edge before writing again.
    pub blocked: bool,
}

/// Room kept for one gap notice: `event: gap\ndata: {"from":<20 digits>,"to":<20 digits>}\n\n`.
pub const GAP_FRAME_MAX_BYTES: usize = 80;

/// One queued frame. Kept to two words (a tag and a pointer): a stalled stream holds up to
/// `max_events` of these, so their size is most of an outbox's memory. Events — nearly
/// every entry — are a shared handle; raw frames and gap notices are rare and boxed.
#[derive(Debug)]
enum Entry {
    Event(Arc<Event>),
    Frame(Box<RawFrame>),
    /// A gap notice not yet started; pinned, and merged with later losses (boxed: rare).
    Gap(Box<(u64, u64, Bytes)>),
}

#[derive(Debug)]
struct RawFrame {
    bytes: Bytes,
    pinned: bool,
}

impl Entry {
    fn frame(bytes: Bytes, pinned: bool) -> Entry {
        Entry::Frame(Box::new(RawFrame { bytes, pinned }))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Entry::Event(e) => &e.frame,
            Entry::Frame(f) => &f.bytes,
            Entry::Gap(g) => &g.2,
        }
    }

    /// The eviction class, `None` when pinned.
    fn class(&self) -> Option<Class> {
        match self {
            Entry::Event(e) => Some(e.class),
            Entry::Frame(f) if !f.pinned => Some(Class::Droppable),
            Entry::Frame(_) | Entry::Gap(_) => None,
        }
    }
}

/// Bounded queue of frames with an offset into the partly written head.
#[derive(Debug, Default)]
pub struct Outbox {
    entries: VecDeque<Entry>,
    head_offset: usize,
    queued: usize,
    /// Evictable entries queued, by [`Class::index`] (lets pushes skip scans).
    counts: [u32; 3],
    /// Reliable ids dropped since the last flush.
    gap: GapRange,
}

/// An inclusive range of ids, empty when `from > to`: 16 bytes where `Option<(u64, u64)>`
/// takes 24, in a struct every stream holds.
#[derive(Debug, Clone, Copy)]
struct GapRange {
    from: u64,
    to: u64,
}

impl GapRange {
    const EMPTY: GapRange = GapRange { from: 1, to: 0 };

    fn get(self) -> Option<(u64, u64)> {
        (self.from <= self.to).then_some((self.from, self.to))
    }

    fn with(self, id: u64) -> GapRange {
        match self.get() {
            Some((from, to)) => GapRange { from: from.min(id), to: to.max(id) },
            None => GapRange { from: id, to: id },
        }
    }
}

impl Default for GapRange {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl Outbox {
    /// An empty outbox (no allocation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames queued (including a partly written head).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing left to write and no gap to report.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.gap.get().is_none()
    }

    /// Unwritten bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// No room left for two more frames of `frame_len` bytes without evicting: the loop's
    /// intake pause fires here, so a stream it is merely late for keeps every frame while
    /// each write carries as many as the outbox holds.
    pub fn nearly_full(&self, bounds: Bounds, frame_len: usize) -> bool {
        // Frames near the outbox's size would pause the intake after every push: a quarter of
        // the outbox is margin enough.
        let margin = 2 * frame_len.min(bounds.max_bytes / 4);
        self.entries.len() + 2 > bounds.max_events || self.queued + margin > bounds.max_bytes
    }

    /// Reliable ids lost and not yet reported.
    pub fn pending_gap(&self) -> Option<(u64, u64)> {
        self.gap.get()
    }

    /// Queues a shared event: conflates a `latest` value, evicts by class while a bound is
    /// exceeded.
    pub fn push_event(&mut self, event: Arc<Event>, bounds: Bounds) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        if event.class == Class::Latest && self.counts[Class::Latest.index()] > 0 {
            let start = self.first_unstarted();
            let same = |e: &Entry| match e {
                Entry::Event(q) => q.class == Class::Latest && q.topic == event.topic && q.key == event.key,
                Entry::Frame(_) | Entry::Gap(_) => false,
            };
            if let Some(i) = self.entries.iter().skip(start).position(same) {
                self.remove(start + i);
                outcome.conflated = true;
            }
        }
        let (id, class) = (event.id, event.class);
        self.push_entry(Entry::Event(event), bounds, &mut outcome);
        if outcome.rejected && class == Class::Reliable {
            self.note_gap(id);
        }
        outcome
    }

    /// Evicts by class (invariant 4) until both `bounds` hold, keeping the partly written
    /// head and pinned frames; reliable losses join the pending gap range. For a queue that
    /// grew under a larger bound while its client kept up, once the client falls behind.
    pub fn trim(&mut self, bounds: Bounds) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        while self.entries.len() > bounds.max_events || self.queued > bounds.max_bytes {
            match self.evict_one(u8::MAX) {
                Some(class) => outcome.evicted[class.index()] += 1,
                None => break,
            }
        }
        outcome
    }

    /// Queues an evictable raw frame (a heartbeat), bounded like a droppable event.
    pub fn push(&mut self, frame: Bytes, bounds: Bounds) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        if !frame.is_empty() {
            self.push_entry(Entry::frame(frame, false), bounds, &mut outcome);
        }
        outcome
    }

    /// Queues a pinned frame with no bound: only a connection's own responses, stream head
    /// and notices, which are bounded by the request or event that caused them.
    pub fn push_unbounded(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.queued += frame.len();
            self.entries.push_back(Entry::frame(frame, true));
        }
    }

    /// Queues a gap notice for reliable ids `from..=to` that never reached this outbox (the
    /// bus lost them): after everything queued, which is older, and merged into a notice
    /// still unsent at the back. Pinned; one per loss report, so bounded by what caused it.
    pub fn push_lost(&mut self, from: u64, to: u64) {
        let merge_into_back =
            self.entries.len() > self.first_unstarted() && matches!(self.entries.back(), Some(Entry::Gap(_)));
        if merge_into_back {
            if let Some(Entry::Gap(old)) = self.entries.pop_back() {
                self.queued -= old.2.len();
                let (from, to) = (from.min(old.0), to.max(old.1));
                return self.push_gap_entry(from, to);
            }
        }
        self.push_gap_entry(from, to);
    }

    fn push_gap_entry(&mut self, from: u64, to: u64) {
        let bytes = crate::sse::gap_frame(from, to);
        self.queued += bytes.len();
        self.entries.push_back(Entry::Gap(Box::new((from, to, bytes))));
    }

    fn push_entry(&mut self, entry: Entry, bounds: Bounds, outcome: &mut PushOutcome) {
        let len = entry.bytes().len();
        let incoming = entry.class().map_or(u8::MAX, rank);
        while self.entries.len() >= bounds.max_events || self.queued + len > bounds.max_bytes {
            // Never evict something worth more than what comes in: a full outbox of
            // reliable events drops the incoming droppable, not a reliable one.
            match self.evict_one(incoming) {
                Some(class) => outcome.evicted[class.index()] += 1,
                None => {
                    outcome.rejected = true;
                    return;
                }
            }
        }
        if let Some(class) = entry.class() {
            self.counts[class.index()] += 1;
        }
        self.queued += len;
        self.entries.push_back(entry);
    }

    /// Index of the first entry no byte of which has been written.
    fn first_unstarted(&self) -> usize {
        usize::from(self.head_offset > 0)
    }

    /// Removes the oldest evictable entry of the cheapest class present (invariant 4), unless
    /// that class ranks above `max_rank` (then nothing is removed). The partly written head
    /// counts in `counts` but is skipped, so a class whose only entry is the head falls
    /// through to the next class. One scan: the class counts say where to look.
    fn evict_one(&mut self, max_rank: u8) -> Option<Class> {
        let start = self.first_unstarted();
        for class in [Class::Droppable, Class::Latest, Class::Reliable] {
            if self.counts[class.index()] == 0 {
                continue;
            }
            let Some(i) = self.entries.iter().skip(start).position(|e| e.class() == Some(class)) else {
                continue;
            };
            if rank(class) > max_rank {
                return None;
            }
            if let Some(Entry::Event(e)) = self.remove(start + i) {
                if class == Class::Reliable {
                    self.note_gap(e.id);
                }
            }
            return Some(class);
        }
        None
    }

    fn remove(&mut self, i: usize) -> Option<Entry> {
        let entry = self.entries.remove(i)?;
        self.queued -= entry.bytes().len();
        if let Some(class) = entry.class() {
            self.counts[class.index()] -= 1;
        }
        Some(entry)
    }

    fn note_gap(&mut self, id: u64) {
        self.gap = self.gap.with(id);
    }

    /// Puts the pending gap notice before the first unsent evictable frame (invariant 5):
    /// merged into an unsent notice already there, or as a new one after evicting what it
    /// needs to keep both bounds (which may widen the range it reports).
    fn place_gap(&mut self, bounds: Bounds, evicted: &mut [u32; 3]) -> bool {
        if self.gap.get().is_none() {
            return false;
        }
        let start = self.first_unstarted();
        // Only a notice ahead of every unsent event: one queued behind events
        // ([`Outbox::push_lost`]) reports newer losses and stays where it is. Merging with
        // one ahead of every event widens no range over an id this stream received: the
        // queue is in id order, and nothing unsent lies between the two.
        let leading_notice = |o: &Outbox| {
            o.entries
                .iter()
                .skip(start)
                .take_while(|e| e.class().is_none())
                .position(|e| matches!(e, Entry::Gap(_)))
        };
        let mut existing = leading_notice(self);
        if existing.is_none() {
            while self.entries.len() >= bounds.max_events
                || self.queued + GAP_FRAME_MAX_BYTES > bounds.max_bytes
            {
                match self.evict_one(u8::MAX) {
                    Some(class) => evicted[class.index()] += 1,
                    None => break,
                }
            }
            existing = leading_notice(self);
        }
        let Some((mut from, mut to)) = std::mem::take(&mut self.gap).get() else { return false };
        let at = match existing {
            Some(i) => {
                let i = start + i;
                if let Some(Entry::Gap(old)) = self.entries.remove(i) {
                    self.queued -= old.2.len();
                    (from, to) = (from.min(old.0), to.max(old.1));
                }
                i
            }
            None => start + self.entries.iter().skip(start).take_while(|e| e.class().is_none()).count(),
        };
        let bytes = crate::sse::gap_frame(from, to);
        self.queued += bytes.len();
        self.entries.insert(at, Entry::Gap(Box::new((from, to, bytes))));
        existing.is_none()
    }

    /// Fills `slices` with the unwritten queued bytes, head first; returns how many were set.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, entry) in self.entries.iter().enumerate().take(slices.len()) {
            let start = if i == 0 { self.head_offset } else { 0 };
            slices[i] = IoSlice::new(&entry.bytes()[start..]);
            n += 1;
        }
        n
    }

    /// Marks `written` bytes as accepted by the kernel; returns the frames completed.
    pub fn advance(&mut self, written: usize) -> usize {
        self.advance_with(written, &mut |_| {})
    }

    /// [`Outbox::advance`], calling `delivered` for every event frame completed.
    fn advance_with(&mut self, mut written: usize, delivered: &mut impl FnMut(&Event)) -> usize {
        let mut completed = 0;
        self.queued -= written.min(self.queued);
        while written > 0 {
            let Some(head) = self.entries.front() else { break };
            let left = head.bytes().len() - self.head_offset;
            if written >= left {
                written -= left;
                self.head_offset = 0;
                if let Some(entry) = self.entries.pop_front() {
                    if let Some(class) = entry.class() {
                        self.counts[class.index()] -= 1;
                    }
                    if let Entry::Event(e) = &entry {
                        delivered(e);
                    }
                }
                completed += 1;
            } else {
                self.head_offset += written;
                written = 0;
            }
        }
        if self.entries.is_empty() {
            // Invariant 6: an idle stream keeps no ring allocation.
            self.entries = VecDeque::new();
        }
        completed
    }

    /// Writes queued frames with vectored writes until empty or `WouldBlock`, after placing
    /// the pending gap notice within `bounds`. Errors other than `WouldBlock`/`Interrupted`
    /// are returned; the connection is dead.
    pub fn flush_to<W: Write>(&mut self, sink: &mut W, bounds: Bounds) -> io::Result<Flushed> {
        self.flush_with(sink, bounds, |_| {})
    }

    /// [`Outbox::flush_to`], calling `delivered` for every event frame the kernel took
    /// whole (the loop measures delivery lag with it).
    pub fn flush_with<W: Write>(
        &mut self,
        sink: &mut W,
        bounds: Bounds,
        mut delivered: impl FnMut(&Event),
    ) -> io::Result<Flushed> {
        let mut flushed =
            Flushed { bytes: 0, frames: 0, writes: 0, gaps: 0, evicted: [0; 3], blocked: false };
        flushed.gaps = usize::from(self.place_gap(bounds, &mut flushed.evicted));
        while !self.entries.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let count = self.io_slices(&mut slices);
            match sink.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    flushed.bytes += n;
                    flushed.writes += 1;
                    flushed.frames += self.advance_with(n, &mut delivered);
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

/// Eviction rank: lower goes first.
fn rank(class: Class) -> u8 {
    match class {
        Class::Droppable => 0,
        Class::Latest => 1,
        Class::Reliable => 2,
    }
}

#[cfg(test)]
mod tests;

const _: () = assert!(std::mem::size_of::<Entry>() == 16, "an outbox entry is two words");
