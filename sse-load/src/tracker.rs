//! Per-stream ordering and completeness checks.
//!
//! Contract: a [`StreamCheck`] sees each event of one stream in arrival order and counts
//! - id regressions: an `id` not strictly greater than the previous one (duplicate or reordered),
//!   among ids that are decimal u64s; other ids (a peer's own scheme, e.g. nchan's `T:N`) are
//!   only counted, never compared: completeness and order rest on the seqs stamped in the data;
//! - per publisher lane, sequence holes (a jump forward: the skipped seqs were missed *so far*),
//!   and sequence repeats/regressions;
//! - distinct in-order deliveries, from which [`StreamCheck::missing`] derives the events this
//!   stream never got once the number of events the server accepted is known. Holes alone would
//!   over-count: a publish the server refused leaves a hole in every stream without any loss.
//!
//! With `from_zero` the first expected seq of every lane is 0 (the publisher started after the
//! stream was ready, so a missing head is a loss); otherwise the first seq seen is the baseline.
//!
//! [`StreamCheck::expected`] picks the accepted count a stream is held to: that of the stream's
//! own server address, or, when events are published to other addresses (`--publish-addr`),
//! that of the publish address whose lanes reach the stream (the first lane seen, divided by
//! the lanes per publish address), since the client cannot know which SO_REUSEPORT process
//! took its connection. A stream that got no stamped event is held to the largest count.

use crate::payload;

/// Lanes beyond this are not tracked (bounds per-stream memory against a foreign publisher).
pub const MAX_LANES: usize = 1024;

/// Sentinel in `next_seq`: this lane has not been seen (baseline mode).
const UNSEEN: u64 = u64::MAX;

/// Ordering state and counters of one stream.
#[derive(Debug, Default, Clone)]
pub struct StreamCheck {
    from_zero: bool,
    last_id: Option<u64>,
    next_seq: Vec<u64>,
    /// Events taken in order (the first of each lane, or the next seq or a later one).
    pub distinct: u64,
    /// Seqs skipped over by forward jumps.
    pub holes: u64,
    /// Events whose seq was not above the previous one of the lane.
    pub seq_regressions: u64,
    /// Events whose id was not above the previous id.
    pub id_regressions: u64,
    /// Events whose id is not a decimal u64 (not checked for order; informational).
    pub non_numeric_ids: u64,
    /// Stamped events on lanes past [`MAX_LANES`].
    pub untracked: u64,
    /// The lane of the first tracked stamped event: tells which publish address feeds the stream.
    pub first_lane: Option<u32>,
}

impl StreamCheck {
    /// A fresh check; see the module doc for `from_zero`.
    pub fn new(from_zero: bool) -> Self {
        StreamCheck { from_zero, ..StreamCheck::default() }
    }

    /// Records an event id (events without one, like gap notices, are not passed here).
    pub fn on_id(&mut self, id: u64) {
        match self.last_id {
            Some(last) if id <= last => self.id_regressions += 1,
            _ => self.last_id = Some(id),
        }
    }

    /// Records an event id as received: a decimal u64 goes to [`StreamCheck::on_id`]; any
    /// other id is counted in `non_numeric_ids` and otherwise ignored.
    pub fn on_raw_id(&mut self, id: &[u8]) {
        match payload::parse_u64(id) {
            Some(id) => self.on_id(id),
            None => self.non_numeric_ids += 1,
        }
    }

    /// Records one stamped event's lane and seq.
    pub fn on_seq(&mut self, lane: u32, seq: u64) {
        let lane = lane as usize;
        if lane >= MAX_LANES {
            self.untracked += 1;
            return;
        }
        self.first_lane.get_or_insert(lane as u32);
        if self.next_seq.len() <= lane {
            let fill = if self.from_zero { 0 } else { UNSEEN };
            self.next_seq.resize(lane + 1, fill);
        }
        let next = &mut self.next_seq[lane];
        if *next == UNSEEN || seq == *next {
            self.distinct += 1;
            *next = seq.saturating_add(1);
        } else if seq > *next {
            self.holes += seq - *next;
            self.distinct += 1;
            *next = seq.saturating_add(1);
        } else {
            self.seq_regressions += 1;
        }
    }

    /// Events of `accepted` this stream never got (0 if it got them all or more).
    pub fn missing(&self, accepted: u64) -> u64 {
        accepted.saturating_sub(self.distinct)
    }

    /// Events this stream should have got: `accepted[target]` (accepted per server address,
    /// `target` the stream's own), or with `lanes_per_publish_addr` (publish addresses set apart
    /// from the stream addresses) the count of the publish address feeding it; see the module doc.
    pub fn expected(&self, accepted: &[u64], target: usize, lanes_per_publish_addr: Option<usize>) -> u64 {
        let index = match lanes_per_publish_addr {
            None => Some(target),
            Some(lanes) => self.first_lane.map(|l| l as usize / lanes.max(1)),
        };
        match index {
            Some(k) => accepted.get(k).copied().unwrap_or(0),
            None => accepted.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Reads the id range of a gap notice's data, `{"from":F,"to":T}`; `None` if it is not one.
pub fn gap_range(data: &[u8]) -> Option<(u64, u64)> {
    let rest = data.strip_prefix(b"{\"from\":")?;
    let (from, rest) = payload::number(rest)?;
    let rest = rest.strip_prefix(b",\"to\":")?;
    let (to, _) = payload::number(rest)?;
    Some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_gaps() {
        let mut c = StreamCheck::new(true);
        for seq in 0..100 {
            c.on_id(1000 + seq);
            c.on_seq((seq % 4) as u32, seq / 4);
        }
        assert_eq!((c.distinct, c.holes, c.seq_regressions, c.id_regressions), (100, 0, 0, 0));
        assert_eq!(c.missing(100), 0);
    }

    #[test]
    fn holes_regressions_and_missing() {
        let mut c = StreamCheck::new(true);
        for seq in [0, 1, 4, 5, 5, 3, 9] {
            c.on_seq(0, seq);
        }
        // 2,3 skipped; 6,7,8 skipped; 5 repeated; 3 late.
        assert_eq!(c.holes, 5);
        assert_eq!(c.seq_regressions, 2);
        assert_eq!(c.distinct, 5);
        // Ten accepted, five seen in order; a refused publish would also leave a hole but not
        // count as missing, because `accepted` excludes it.
        assert_eq!(c.missing(10), 5);
        assert_eq!(c.missing(3), 0);
    }

    #[test]
    fn missing_head_counts_only_from_zero() {
        let mut strict = StreamCheck::new(true);
        let mut baseline = StreamCheck::new(false);
        for seq in 10..20 {
            strict.on_seq(1, seq);
            baseline.on_seq(1, seq);
        }
        assert_eq!(strict.holes, 10);
        assert_eq!(baseline.holes, 0);
        assert_eq!(baseline.distinct, 10);
    }

    #[test]
    fn ids_must_strictly_increase() {
        let mut c = StreamCheck::new(true);
        for id in [5, 6, 6, 4, 7] {
            c.on_id(id);
        }
        assert_eq!(c.id_regressions, 2);
    }

    #[test]
    fn non_numeric_ids_are_counted_not_checked() {
        let mut c = StreamCheck::new(true);
        for seq in 0..5u64 {
            // nchan-style ids: neither compared nor an error; the stamped seqs still count.
            c.on_raw_id(format!("1732250000:{}", 4 - seq).as_bytes());
            c.on_seq(0, seq);
        }
        c.on_seq(0, 7);
        assert_eq!((c.non_numeric_ids, c.id_regressions), (5, 0));
        assert_eq!((c.distinct, c.holes, c.seq_regressions), (6, 2, 0));
        assert_eq!(c.missing(8), 2);
        // Numeric ids on the same stream are still compared.
        c.on_raw_id(b"10");
        c.on_raw_id(b"9");
        assert_eq!((c.non_numeric_ids, c.id_regressions), (5, 1));
    }

    #[test]
    fn lanes_are_bounded() {
        let mut c = StreamCheck::new(true);
        c.on_seq(MAX_LANES as u32, 0);
        c.on_seq(u32::MAX, 0);
        assert_eq!((c.untracked, c.distinct), (2, 0));
    }

    #[test]
    fn expected_follows_the_feeding_publish_address() {
        let accepted = [5, 4, 3];
        let mut c = StreamCheck::new(true);
        // Own server address: unchanged behaviour, lanes do not matter.
        assert_eq!(c.expected(&accepted, 1, None), 4);
        assert_eq!(c.expected(&accepted, 7, None), 0);
        // Nothing received yet: held to the largest count.
        assert_eq!(c.expected(&accepted, 0, Some(4)), 5);
        // Four lanes per publish address: lane 9 belongs to publish address 2.
        c.on_seq(9, 0);
        c.on_seq(8, 0);
        assert_eq!(c.first_lane, Some(9));
        assert_eq!(c.expected(&accepted, 0, Some(4)), 3);
        assert_eq!(c.expected(&accepted, 0, Some(0)), 0, "lane 9 of 1-lane addresses is unknown");
    }

    #[test]
    fn gap_notice_data() {
        assert_eq!(gap_range(b"{\"from\":17,\"to\":42}"), Some((17, 42)));
        assert_eq!(gap_range(b"{\"to\":42}"), None);
    }
}
