//! Sans-IO decoder for an HTTP/1.1 `Transfer-Encoding: chunked` body.
//!
//! Contract:
//! - [`Decoder::next`] takes the next received bytes of the body, in order, split at any byte
//!   position, and hands back the chunk data they carry as sub-slices of that same input (no copy,
//!   no allocation; the state is a few integers). The split points never change the data: the
//!   concatenation of every [`Decoded::Data`] is the decoded body.
//! - Framing accepted: `chunk-size [BWS] [; ext...] CRLF data CRLF`, repeated; the size is hex
//!   in either case; extensions are skipped without being interpreted. Line ends must be CRLF.
//! - A zero-size chunk ends the body: [`Decoded::End`] is returned once its size line is
//!   complete, and from then on. Trailer fields after it are not read: for a stream that end is
//!   the server closing it.
//! - Bounds: a size line (size, whitespace and extensions) over [`MAX_SIZE_LINE`] bytes, or a
//!   size over [`MAX_CHUNK`], is an error. After an error the decoder refuses further input (the
//!   caller closes the stream).

/// Longest chunk-size line accepted, extensions included (bounds what a hostile server can make
/// the decoder skip while nothing is decoded; real servers send a few bytes).
pub const MAX_SIZE_LINE: usize = 4096;
/// Largest chunk size accepted: 2⁴⁸ bytes, far above any real chunk and far from overflowing the
/// hex accumulation.
pub const MAX_CHUNK: u64 = 1 << 48;

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// The size line does not start with a hex digit, or has something other than whitespace
    /// or `;` after the digits.
    BadSize,
    /// The chunk size exceeds [`MAX_CHUNK`].
    SizeTooLarge,
    /// The size line exceeds [`MAX_SIZE_LINE`].
    SizeLineTooLong,
    /// A CR not followed by LF, a bare LF, or chunk data not followed by CRLF.
    MissingCrlf,
}

impl ChunkError {
    /// A short, stable name, used in error kinds.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkError::BadSize => "bad chunk size",
            ChunkError::SizeTooLarge => "chunk size too large",
            ChunkError::SizeLineTooLong => "chunk size line too long",
            ChunkError::MissingCrlf => "missing CRLF",
        }
    }
}

/// What one call to [`Decoder::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Chunk data (never empty), a sub-slice of the input.
    Data(&'a [u8]),
    /// The input is used up; feed more.
    NeedMore,
    /// The zero-size chunk was read: the body is over.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the hex digits of a size line (`digits` read so far).
    Size { digits: usize },
    /// After the digits: optional whitespace before `;` or CR.
    SizeWs,
    /// Inside chunk extensions, skipped up to CR.
    Ext,
    /// CR of the size line read; LF next.
    SizeLf,
    /// Inside chunk data; `remaining` bytes to go (never 0).
    Data { remaining: u64 },
    /// Chunk data complete; CR next.
    DataCr,
    /// CR after the data read; LF next.
    DataLf,
    /// The last chunk was read.
    Done,
    /// Framing error; every further call repeats it.
    Failed(ChunkError),
}

/// Decoding state of one chunked body.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// Chunk size being read.
    size: u64,
    /// Bytes of the current size line so far (without its CRLF).
    line_len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Decoder { state: State::Size { digits: 0 }, size: 0, line_len: 0 }
    }

    /// Decodes from the front of `input`, advancing it past what was consumed; see the module
    /// doc. Call again with the rest while it returns [`Decoded::Data`].
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Decoded<'a>, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Failed(e) => return Err(e),
                State::Data { remaining } => {
                    if input.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
                    let (data, rest) = input.split_at(take);
                    *input = rest;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 { State::DataCr } else { State::Data { remaining } };
                    return Ok(Decoded::Data(data));
                }
                _ => {}
            }
            let Some((&b, rest)) = input.split_first() else { return Ok(Decoded::NeedMore) };
            *input = rest;
            if let Err(e) = self.framing_byte(b) {
                self.state = State::Failed(e);
                return Err(e);
            }
        }
    }

    /// Steps through one byte of framing (anything but chunk data).
    fn framing_byte(&mut self, b: u8) -> Result<(), ChunkError> {
        if b != b'\r' && matches!(self.state, State::Size { .. } | State::SizeWs | State::Ext) {
            self.line_len += 1;
            if self.line_len > MAX_SIZE_LINE {
                return Err(ChunkError::SizeLineTooLong);
            }
        }
        self.state = match (self.state, b) {
            (State::Size { digits }, _) if b.is_ascii_hexdigit() => {
                let v = u64::from((b as char).to_digit(16).unwrap_or(0));
                self.size = self.size * 16 + v;
                if self.size > MAX_CHUNK {
                    return Err(ChunkError::SizeTooLarge);
                }
                State::Size { digits: digits + 1 }
            }
            (State::Size { digits: 0 }, _) => return Err(ChunkError::BadSize),
            (State::Size { .. } | State::SizeWs, b' ' | b'\t') => State::SizeWs,
            (State::Size { .. } | State::SizeWs, b';') => State::Ext,
            (State::Size { .. } | State::SizeWs | State::Ext, b'\r') => State::SizeLf,
            (State::Size { .. } | State::SizeWs | State::Ext, b'\n') => return Err(ChunkError::MissingCrlf),
            (State::Size { .. } | State::SizeWs, _) => return Err(ChunkError::BadSize),
            (State::Ext, _) => State::Ext,
            (State::SizeLf, b'\n') => {
                let size = std::mem::take(&mut self.size);
                self.line_len = 0;
                if size == 0 {
                    State::Done
                } else {
                    State::Data { remaining: size }
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size { digits: 0 },
            (State::SizeLf | State::DataCr | State::DataLf, _) => return Err(ChunkError::MissingCrlf),
            // Data, Done and Failed are handled by `next` and never reach here.
            (s @ (State::Data { .. } | State::Done | State::Failed(_)), _) => s,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse_parse::{Item, Limits, Parser};

    /// Feeds `parts` in order; returns the decoded bytes, whether the end was seen, and the
    /// first error.
    fn decode(parts: &[&[u8]]) -> (Vec<u8>, bool, Option<ChunkError>) {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for part in parts {
            let mut input = *part;
            loop {
                match d.next(&mut input) {
                    Ok(Decoded::Data(data)) => out.extend_from_slice(data),
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::End) => return (out, true, None),
                    Err(e) => return (out, false, Some(e)),
                }
            }
            assert!(input.is_empty(), "NeedMore leaves nothing unread");
        }
        (out, false, None)
    }

    /// Decodes `wire` whole, split in two at every position, and one byte at a time; all must
    /// agree and are returned.
    fn decode_every_split(wire: &[u8]) -> (Vec<u8>, bool, Option<ChunkError>) {
        let whole = decode(&[wire]);
        for cut in 0..=wire.len() {
            assert_eq!(decode(&[&wire[..cut], &wire[cut..]]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode(&bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn plain_chunks_split_anywhere() {
        let (out, end, err) = decode_every_split(b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n");
        assert_eq!((out.as_slice(), end, err), (&b"hello, world"[..], true, None));
    }

    #[test]
    fn extensions_whitespace_and_hex_case() {
        let wire =
            b"A;name=value;x=\"q;uoted\"\r\n0123456789\r\n1a \t; ext\r\nabcdefghijklmnopqrstuvwxyz\r\n\
1B\r\nABCDEFGHIJKLMNOPQRSTUVWXYZ.\r\n0;last\r\nTrailer: x\r\n\r\n";
        let (out, end, err) = decode_every_split(wire);
        assert_eq!(err, None);
        assert!(end);
        assert_eq!(out, b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.");
    }

    #[test]
    fn zero_chunk_ends_and_stays_ended() {
        let mut d = Decoder::new();
        let mut input = &b"3\r\nabc\r\n00\r\nmore"[..];
        assert_eq!(d.next(&mut input), Ok(Decoded::Data(b"abc")));
        assert_eq!(d.next(&mut input), Ok(Decoded::End));
        assert_eq!(input, b"more", "nothing after the last chunk's size line is consumed");
        assert_eq!(d.next(&mut input), Ok(Decoded::End));
    }

    #[test]
    fn data_is_borrowed_without_copy() {
        let wire = b"4\r\nabcd\r\n";
        let mut input = &wire[..];
        let mut d = Decoder::new();
        match d.next(&mut input) {
            Ok(Decoded::Data(data)) => assert!(std::ptr::eq(data.as_ptr(), wire[3..].as_ptr())),
            other => panic!("{other:?}"),
        }
        assert_eq!(d.next(&mut input), Ok(Decoded::NeedMore));
    }

    #[test]
    fn malformed_framing() {
        let cases: [(&[u8], ChunkError); 10] = [
            (b"x\r\n", ChunkError::BadSize),
            (b"\r\n", ChunkError::BadSize),
            (b";ext\r\n", ChunkError::BadSize),
            (b"5x\r\nhello\r\n", ChunkError::BadSize),
            (b"5 5\r\nhello\r\n", ChunkError::BadSize),
            (b"5\nhello\r\n", ChunkError::MissingCrlf),
            (b"5\rxhello\r\n", ChunkError::MissingCrlf),
            (b"5\r\nhelloX\r\n", ChunkError::MissingCrlf),
            (b"5\r\nhello\rX", ChunkError::MissingCrlf),
            (b"5\r\nhello\n0\r\n", ChunkError::MissingCrlf),
        ];
        for (wire, want) in cases {
            let (_, end, err) = decode_every_split(wire);
            assert_eq!((end, err), (false, Some(want)), "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn oversize_size_line_and_size() {
        let mut long = b"1;".to_vec();
        long.resize(MAX_SIZE_LINE + 1, b'x');
        long.extend_from_slice(b"\r\na\r\n");
        assert_eq!(decode_every_split(&long).2, Some(ChunkError::SizeLineTooLong));
        // Exactly at the bound is fine.
        let mut ok = b"1;".to_vec();
        ok.resize(MAX_SIZE_LINE, b'x');
        ok.extend_from_slice(b"\r\na\r\n0\r\n");
        assert_eq!(decode_every_split(&ok), (b"a".to_vec(), true, None));
        // Leading zeros do not count against the size, only against the line.
        assert_eq!(decode(&[b"00000000000000000000001\r\nz\r\n"]).0, b"z");
        assert_eq!(decode_every_split(b"1000000000001\r\n").2, Some(ChunkError::SizeTooLarge));
        assert_eq!(decode(&[b"ffffffffffffffffffff\r\n"]).2, Some(ChunkError::SizeTooLarge));
    }

    #[test]
    fn error_is_sticky() {
        let mut d = Decoder::new();
        assert_eq!(d.next(&mut &b"g"[..]), Err(ChunkError::BadSize));
        assert_eq!(d.next(&mut &b"5\r\nhello\r\n"[..]), Err(ChunkError::BadSize));
    }

    /// Decodes `wire` in two parts split at `cut` and feeds the data to an SSE parser; returns
    /// the ids and data of the events.
    fn sse_events(wire: &[u8], cut: usize) -> (Vec<(String, String)>, bool) {
        let mut d = Decoder::new();
        let mut p = Parser::new(Limits::default());
        let mut events = Vec::new();
        let mut ended = false;
        for part in [&wire[..cut], &wire[cut..]] {
            let mut input = part;
            loop {
                match d.next(&mut input).expect("valid framing") {
                    Decoded::Data(data) => p
                        .feed(data, &mut |item| {
                            if let Item::Event(e) = item {
                                let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                                events.push((s(e.id.unwrap_or(b"")), s(e.data)));
                            }
                        })
                        .expect("valid SSE"),
                    Decoded::NeedMore => break,
                    Decoded::End => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        (events, ended)
    }

    #[test]
    fn several_events_in_one_chunk_and_one_event_over_several_chunks() {
        let events = b"id: 1700000000:1\ndata: {\"lane\":0,\"seq\":0}\n\nid: 1700000000:2\ndata: b\n\n";
        let mut wire = format!("{:x}\r\n", events.len()).into_bytes();
        wire.extend_from_slice(events);
        wire.extend_from_slice(b"\r\n");
        // One event in pieces of 3, 1 and the rest bytes, with an extension on one size line.
        let split = b"id: 7\ndata: split\ndata: across\n\n";
        for (i, piece) in [&split[..3], &split[3..4], &split[4..]].into_iter().enumerate() {
            let ext = if i == 1 { ";e=1" } else { "" };
            wire.extend_from_slice(format!("{:X}{ext}\r\n", piece.len()).as_bytes());
            wire.extend_from_slice(piece);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let want = vec![
            ("1700000000:1".to_owned(), "{\"lane\":0,\"seq\":0}".to_owned()),
            ("1700000000:2".to_owned(), "b".to_owned()),
            ("7".to_owned(), "split\nacross".to_owned()),
        ];
        for cut in 0..=wire.len() {
            assert_eq!(sse_events(&wire, cut), (want.clone(), true), "cut at {cut}");
        }
    }
}
