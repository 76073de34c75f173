//! The bus on Redis Streams (Redis ≥ 6.2 for `XRANGE` with an exclusive start), through the
//! `redis` crate's synchronous API.
//!
//! Layout (one hash tag, so every key lives on one Redis shard):
//! - `{prefix}:events`, one stream for the whole cluster (one order). Each entry has the
//!   explicit id `<id>-0` and the fields `n` (its position: the entries ever appended, dense),
//!   `tprev` (the id of the previous reliable event of its topic, empty for none or for
//!   another class), `topic`, `class` (the class index), `key` (empty: none) and `body` (the
//!   encoded frame without its `id:` line);
//! - `{prefix}:seq`, the last id handed out; `{prefix}:n`, the entries ever appended;
//! - `{prefix}:topics`, a hash of each topic's newest reliable id (one field per topic that
//!   ever had a reliable event: the price of telling exactly which topics a trim cost).
//!
//! Invariants:
//! 1. [`APPEND`] runs atomically in Redis: it takes a batch's ids and positions with one
//!    step each and `XADD`s each event under its id, so ids and positions are contiguous
//!    per batch and the stream's order is the counters'.
//! 2. A batch's first id is the largest of the last id plus one, Redis's clock in
//!    microseconds and the caller's floor (and, with no counter, the stream's top id plus
//!    one). So a Redis that lost its data, or a replica promoted without the tail its
//!    primary handed out, starts above every id handed out before (as long as the failover
//!    took longer than the hosts' clocks differ): no id is ever reused. Microsecond ids
//!    (~1.8e15 today) stay below 2^53 for two centuries, exact in Lua's doubles and in
//!    JavaScript. Ids are therefore sparse: positions (`n`), not ids, show a hole.
//! 3. A lost tail shows as positions going back (`n` restarts at 1 in a Redis that lost its
//!    data), a trim the reader did not keep up with as positions jumping; `tprev` and the
//!    topics hash tell which topics lost what ([`super::reader`]).
//! 4. Every read and write has a socket timeout, so a dead connection shows up as an error,
//!    never as a hang; a blocking read's timeout is longer than its `BLOCK`.

use std::time::Duration;

use bytes::Bytes;
use redis::{Client, Value};

use super::{BusConfig, BusError, Connection, Connector, Entry, Read, StreamId};
use crate::publish::{Class, Prepared};

/// The append script (invariants 1 and 2). KEYS: stream, id counter, entry counter, topics
/// hash. ARGV: floor, maxlen, then topic, class, key, body per event. Returns the first
/// event's id (with no events, the id the next event would get, changing nothing).
pub const APPEND: &str = r#"
local n = (#ARGV - 2) / 4
local t = redis.call('TIME')
local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
local floor = tonumber(ARGV[1])
if floor > start then start = floor end
local last = redis.call('GET', KEYS[2])
if last then
  if tonumber(last) + 1 > start then start = tonumber(last) + 1 end
else
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if top[1] then
    local id = tonumber(string.match(top[1][1], '^(%d+)'))
    if id and id + 1 > start then start = id + 1 end
  end
end
if n == 0 then return start end
if start + n - 1 > 9007199254740991 then return redis.error_reply('ids past 2^53 - 1') end
redis.call('SET', KEYS[2], string.format('%.0f', start + n - 1))
local pos = redis.call('INCRBY', KEYS[3], n) - n
local newest = {}
for i = 0, n - 1 do
  local a = 3 + 4 * i
  local id = string.format('%.0f', start + i)
  local topic = ARGV[a]
  local tprev = ''
  if ARGV[a + 1] == '0' then
    tprev = newest[topic] or redis.call('HGET', KEYS[4], topic) or ''
    newest[topic] = id
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], id .. '-0', 'n', string.format('%.0f', pos + 1 + i),
    'tprev', tprev, 'topic', topic, 'class', ARGV[a + 1], 'key', ARGV[a + 2], 'body', ARGV[a + 3])
end
for topic, id in pairs(newest) do redis.call('HSET', KEYS[4], topic, id) end
return start
"#;

/// Fields of the topics hash scanned at most to find the topics a trim cost (past it the
/// reader reports the loss on every topic).
pub const TOPICS_SCAN_MAX: usize = 1_000_000;
/// Fields per `HSCAN` round trip.
const TOPICS_SCAN_COUNT: usize = 1_000;

/// Longest a connection attempt waits.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to one Redis.
pub struct RedisConnector {
    client: Client,
    described: String,
    stream: String,
    counter: String,
    entries: String,
    topics: String,
    maxlen: u64,
    write_timeout: Duration,
}

impl RedisConnector {
    /// Parses `url`; connects nothing yet.
    pub fn new(url: &str, config: &BusConfig, io_timeout: Duration) -> Result<RedisConnector, BusError> {
        let client =
            Client::open(url).map_err(|e| BusError::Protocol(format!("--bus {}: {e}", redact(url))))?;
        Ok(RedisConnector {
            client,
            described: redact(url),
            stream: config.stream_key(),
            counter: config.counter_key(),
            entries: config.entries_key(),
            topics: config.topics_key(),
            maxlen: config.maxlen,
            write_timeout: io_timeout,
        })
    }
}

/// `url` without its password (in the authority, or a unix URL's `pass=` parameter).
pub(crate) fn redact(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    };
    match url.split_once('?') {
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some(("pass" | "password", _)) => format!("{}=***", &p[..p.find('=').unwrap_or(0)]),
                    _ => p.to_string(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => url,
    }
}

impl Connector for RedisConnector {
    fn connect(&self, read_timeout: Duration) -> Result<Box<dyn Connection>, BusError> {
        let mut con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(unreachable)?;
        con.set_read_timeout(Some(read_timeout)).map_err(unreachable)?;
        con.set_write_timeout(Some(self.write_timeout)).map_err(unreachable)?;
        let sha = load_script(&mut con)?;
        Ok(Box::new(RedisConnection {
            con,
            sha,
            stream: self.stream.clone(),
            counter: self.counter.clone(),
            entries: self.entries.clone(),
            topics: self.topics.clone(),
            maxlen: self.maxlen,
        }))
    }

    fn describe(&self) -> String {
        self.described.clone()
    }
}

fn load_script(con: &mut redis::Connection) -> Result<String, BusError> {
    redis::cmd("SCRIPT").arg("LOAD").arg(APPEND).query(con).map_err(unreachable)
}

fn unreachable(e: redis::RedisError) -> BusError {
    if e.kind() == redis::ErrorKind::ResponseError || e.kind() == redis::ErrorKind::ExtensionError {
        BusError::Protocol(e.to_string())
    } else {
        BusError::Unreachable(e.to_string())
    }
}

struct RedisConnection {
    con: redis::Connection,
    sha: String,
    stream: String,
    counter: String,
    entries: String,
    topics: String,
    maxlen: u64,
}

impl RedisConnection {
    fn append_cmd(&self, events: &[&Prepared], floor: u64) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(4).arg(&self.stream).arg(&self.counter).arg(&self.entries).arg(&self.topics);
        cmd.arg(floor).arg(self.maxlen);
        for e in events {
            cmd.arg(&*e.topic).arg(e.class.index()).arg(e.key.as_deref().unwrap_or("")).arg(&e.body[..]);
        }
        cmd
    }
}

/// Why one append failed.
enum Failed {
    /// Nothing ran: the request was never written whole (Redis runs no partial command), or
    /// Redis answered with an error.
    Refused(redis::RedisError),
    /// The request was written and no answer came back: it may have run.
    Unanswered(redis::RedisError),
}

impl RedisConnection {
    /// One append (invariant 5 of [`super`]: an I/O error once the request is written leaves
    /// the outcome unknown and must say so).
    fn append_once(&mut self, events: &[&Prepared], floor: u64) -> Result<i64, Failed> {
        let packed = self.append_cmd(events, floor).get_packed_command();
        self.con.send_packed_command(&packed).map_err(Failed::Refused)?;
        match self.con.recv_response() {
            Ok(value) => redis::from_redis_value(&value).map_err(Failed::Refused),
            Err(e) if e.is_io_error() => Err(Failed::Unanswered(e)),
            Err(e) => Err(Failed::Refused(e)),
        }
    }
}

impl Connection for RedisConnection {
    fn append(&mut self, events: &[&Prepared], floor: u64) -> Result<u64, BusError> {
        let first = match self.append_once(events, floor) {
            Err(Failed::Refused(e)) if e.kind() == redis::ErrorKind::NoScriptError => {
                // The script cache was flushed (SCRIPT FLUSH): nothing ran; load it, once.
                self.sha = load_script(&mut self.con)?;
                self.append_once(events, floor)
            }
            other => other,
        };
        let first = first.map_err(|f| match f {
            Failed::Refused(e) => unreachable(e),
            Failed::Unanswered(e) => BusError::Unknown(e.to_string()),
        })?;
        u64::try_from(first)
            .ok()
            .filter(|&id| id > 0)
            .ok_or_else(|| BusError::Protocol(format!("append gave id {first}")))
    }

    fn read_after(&mut self, after: StreamId, count: usize, block: Duration) -> Result<Read, BusError> {
        let value: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(after.to_string())
            .query(&mut self.con)
            .map_err(unreachable)?;
        match value {
            Value::Nil => Ok(Read::default()),
            // [[stream, [entry, ...]]]
            Value::Array(streams) => match streams.into_iter().next() {
                Some(Value::Array(mut pair)) if pair.len() == 2 => entries(pair.swap_remove(1)),
                Some(other) => Err(BusError::Protocol(format!("XREAD answered {other:?}"))),
                None => Ok(Read::default()),
            },
            other => Err(BusError::Protocol(format!("XREAD answered {other:?}"))),
        }
    }

    fn range_from(&mut self, from: u64, count: usize) -> Result<Read, BusError> {
        let value: Value = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg(format!("{from}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query(&mut self.con)
            .map_err(unreachable)?;
        entries(value)
    }

    fn entries_appended(&mut self) -> Result<u64, BusError> {
        let n: Option<u64> =
            redis::cmd("GET").arg(&self.entries).query(&mut self.con).map_err(unreachable)?;
        Ok(n.unwrap_or(0))
    }

    fn topics_newest_in(&mut self, after: u64, before: u64) -> Result<Option<Vec<(String, u64)>>, BusError> {
        let mut found = Vec::new();
        let (mut cursor, mut scanned) = (0u64, 0usize);
        loop {
            let (next, fields): (u64, Vec<(String, u64)>) = redis::cmd("HSCAN")
                .arg(&self.topics)
                .arg(cursor)
                .arg("COUNT")
                .arg(TOPICS_SCAN_COUNT)
                .query(&mut self.con)
                .map_err(unreachable)?;
            scanned += fields.len();
            found.extend(fields.into_iter().filter(|&(_, id)| after < id && id < before));
            if next == 0 {
                return Ok(Some(found));
            }
            if scanned >= TOPICS_SCAN_MAX {
                return Ok(None);
            }
            cursor = next;
        }
    }

    fn tail(&mut self, count: usize) -> Result<Read, BusError> {
        let value: Value = redis::cmd("XREVRANGE")
            .arg(&self.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query(&mut self.con)
            .map_err(unreachable)?;
        let mut read = entries(value)?;
        read.entries.reverse();
        Ok(read)
    }
}

/// Parses a list of stream entries `[[id, [field, value, ...]], ...]` one at a time: an
/// entry that is not ours is skipped and counted, and the raw id of the last entry is kept
/// (the highest: the list is in id order, or reversed for `XREVRANGE`).
fn entries(value: Value) -> Result<Read, BusError> {
    let list = match value {
        Value::Array(list) => list,
        Value::Nil => return Ok(Read::default()),
        other => return Err(BusError::Protocol(format!("expected stream entries, got {other:?}"))),
    };
    let mut read = Read::default();
    for value in list {
        let (raw, parsed) = entry(value);
        read.last = read.last.max(raw);
        match parsed {
            Ok(e) => read.entries.push(e),
            Err(e) => {
                read.malformed += 1;
                read.first_error.get_or_insert(e);
            }
        }
    }
    Ok(read)
}

/// A raw stream id `<ms>-<seq>`.
fn stream_id(id: &[u8]) -> Option<StreamId> {
    let (ms, seq) = std::str::from_utf8(id).ok()?.split_once('-')?;
    Some(StreamId { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// One entry: its raw id when it has one, and the entry when it is ours.
fn entry(value: Value) -> (Option<StreamId>, Result<Entry, BusError>) {
    let bad = |what: &str| BusError::Protocol(format!("malformed stream entry: {what}"));
    let Value::Array(parts) = value else { return (None, Err(bad("not a list"))) };
    let raw = parts.first().and_then(text).and_then(stream_id);
    let parsed = match raw {
        Some(StreamId { ms, seq: 0 }) => {
            fields(ms, &parts).map_err(|what| bad(&format!("{what} (id {ms}-0)")))
        }
        Some(id) => Err(bad(&format!("id {id} is not <n>-0"))),
        None => Err(bad("id")),
    };
    (raw, parsed)
}

/// The fields of our entry `id`; what is wrong otherwise.
fn fields(id: u64, parts: &[Value]) -> Result<Entry, &'static str> {
    let bad = |what: &'static str| what;
    let [_, Value::Array(fields)] = parts else { return Err(bad("not [id, fields]")) };
    let (mut topic, mut class, mut key, mut body) = (None, Class::Reliable, None, None);
    let (mut n, mut tprev) = (None, 0);
    let number = |value: &[u8]| std::str::from_utf8(value).ok().and_then(|s| s.parse::<u64>().ok());
    for pair in fields.chunks(2) {
        let [name, value] = pair else { return Err(bad("odd field list")) };
        let (Some(name), Some(value)) = (text(name), text(value)) else { return Err(bad("field")) };
        match name {
            b"topic" => topic = Some(String::from_utf8(value.to_vec()).map_err(|_| bad("topic"))?),
            b"class" => {
                let index = std::str::from_utf8(value).ok().and_then(|s| s.parse::<usize>().ok());
                class = index.and_then(|i| Class::ALL.get(i).copied()).ok_or_else(|| bad("class"))?;
            }
            b"key" if !value.is_empty() => {
                key = Some(String::from_utf8(value.to_vec()).map_err(|_| bad("key"))?)
            }
            b"body" => body = Some(Bytes::copy_from_slice(value)),
            b"n" => n = Some(number(value).ok_or_else(|| bad("n"))?),
            b"tprev" if !value.is_empty() => tprev = number(value).ok_or_else(|| bad("tprev"))?,
            _ => {}
        }
    }
    let (Some(topic), Some(body)) = (topic, body) else { return Err(bad("missing topic or body")) };
    Ok(Entry { id, n, tprev, topic, class, key, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_entries_and_skips_those_not_ours() {
        let good = Value::Array(vec![Value::Array(vec![
            bulk("1700000000000001-0"),
            Value::Array(vec![
                bulk("topic"),
                bulk("jobs"),
                bulk("class"),
                bulk("1"),
                bulk("key"),
                bulk("j1"),
                bulk("body"),
                bulk("data: x\n\n"),
            ]),
        ])]);
        let list = entries(good).unwrap().entries;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, 1_700_000_000_000_001);
        assert_eq!(list[0].topic, "jobs");
        assert_eq!(list[0].class, Class::Latest);
        assert_eq!(list[0].key.as_deref(), Some("j1"));
        assert_eq!(&list[0].body[..], b"data: x\n\n");
        let ours = |id: &str| {
            Value::Array(vec![
                bulk(id),
                Value::Array(vec![bulk("topic"), bulk("t"), bulk("body"), bulk("b")]),
            ])
        };
        // Another writer's entries between two of ours: skipped one by one, counted, and the
        // raw id of the last read is kept, foreign or not.
        let mixed = Value::Array(vec![
            ours("16-0"),
            Value::Array(vec![bulk("16-1"), Value::Array(vec![bulk("f"), bulk("v")])]),
            Value::Array(vec![bulk("17-0"), Value::Array(vec![bulk("topic"), bulk("t")])]),
            Value::Int(3),
            ours("18-0"),
            Value::Array(vec![bulk("18-7"), Value::Array(vec![])]),
        ]);
        let read = entries(mixed).unwrap();
        assert_eq!(read.entries.iter().map(|e| e.id).collect::<Vec<_>>(), vec![16, 18]);
        assert_eq!(read.malformed, 4);
        assert_eq!(read.last, Some(StreamId { ms: 18, seq: 7 }));
        assert!(read.first_error.unwrap().to_string().contains("16-1"));
        assert!(entries(Value::Nil).unwrap().is_empty());
        assert!(entries(Value::Int(1)).is_err(), "a reply that is not a list of entries");
    }

    #[test]
    fn redacts_the_password() {
        assert_eq!(redact("redis://u:secret@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redact("unix:///run/redis.sock"), "unix:///run/redis.sock");
        assert_eq!(redact("unix:///run/redis.sock?db=1&pass=secret"), "unix:///run/redis.sock?db=1&pass=***");
    }
}
