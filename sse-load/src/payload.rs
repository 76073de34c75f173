//! The publisher's event data and the shared clock.
//!
//! Contract: [`encode`] writes `{"lane":L,"seq":S,"ts_us":T,"pad":"xxx"}` padded with `x` to the
//! requested length (never shorter than the unpadded form); [`decode`] reads back exactly that
//! prefix, with no allocation, and returns `None` for anything else (foreign events are counted,
//! not checked). `ts_us` is CLOCK_REALTIME in microseconds, read by [`now_us`] on both sides; the
//! publisher and the subscribers run on the same host, so the clocks agree.

use std::time::{SystemTime, UNIX_EPOCH};

/// What the publisher stamps into each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher lane (one per publishing connection); `seq` counts within a lane.
    pub lane: u32,
    /// Sequence number within the lane, from 0, without holes on the sending side.
    pub seq: u64,
    /// Wall-clock microseconds when the request was written.
    pub ts_us: u64,
}

/// Wall-clock microseconds since the Unix epoch (CLOCK_REALTIME); 0 if the clock is before 1970.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Appends the stamped data to `out`, padded to `len` bytes when that is longer than the stamp.
pub fn encode(out: &mut Vec<u8>, stamp: Stamp, len: usize) {
    use std::io::Write;
    let start = out.len();
    // Writing to a Vec cannot fail.
    let _ =
        write!(out, "{{\"lane\":{},\"seq\":{},\"ts_us\":{},\"pad\":\"", stamp.lane, stamp.seq, stamp.ts_us);
    let used = out.len() - start + 2;
    out.resize(out.len() + len.saturating_sub(used), b'x');
    out.extend_from_slice(b"\"}");
}

/// Reads a stamp written by [`encode`]; `None` if `data` is not one.
pub fn decode(data: &[u8]) -> Option<Stamp> {
    let rest = data.strip_prefix(b"{\"lane\":")?;
    let (lane, rest) = number(rest)?;
    let rest = rest.strip_prefix(b",\"seq\":")?;
    let (seq, rest) = number(rest)?;
    let rest = rest.strip_prefix(b",\"ts_us\":")?;
    let (ts_us, rest) = number(rest)?;
    if !(rest.starts_with(b",") || rest.starts_with(b"}")) {
        return None;
    }
    Some(Stamp { lane: u32::try_from(lane).ok()?, seq, ts_us })
}

/// Parses a decimal u64 (1..=20 digits) at the start of `s`; returns it and the rest.
pub fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let v =
        s[..digits].iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))?;
    Some((v, &s[digits..]))
}

/// Parses a whole slice as a decimal u64 (an SSE `id`).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    match number(s)? {
        (v, []) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_at_every_length() {
        let stamp = Stamp { lane: 3, seq: 123, ts_us: 1_795_313_991_905_920 };
        for len in 0..200 {
            let mut out = b"prefix".to_vec();
            encode(&mut out, stamp, len);
            let body = &out[6..];
            assert!(body.len() >= len, "len {len}");
            if len > 60 {
                assert_eq!(body.len(), len);
            }
            assert_eq!(decode(body), Some(stamp));
            let v: serde_json::Value = serde_json::from_slice(body).expect("valid JSON");
            assert_eq!(v["seq"], 123);
        }
    }

    #[test]
    fn foreign_data_is_not_a_stamp() {
        for d in [
            &b""[..],
            b"hello",
            b"{\"seq\":1}",
            b"{\"lane\":1,\"seq\":x",
            b"{\"lane\":99999999999,\"seq\":1,\"ts_us\":2}",
        ] {
            assert_eq!(decode(d), None, "{:?}", String::from_utf8_lossy(d));
        }
        assert_eq!(decode(b"{\"lane\":1,\"seq\":2,\"ts_us\":3}"), Some(Stamp { lane: 1, seq: 2, ts_us: 3 }));
    }

    #[test]
    fn ids() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"12 "), None);
        assert_eq!(parse_u64(b""), None);
    }
}
