//! The bus on Redis Streams (Redis ≥ 6.2 for `XRANGE` with an exclusive start), through the
//! `redis` crate's synchronous API.
//!
//! Layout: one stream `{prefix}:events` for the whole cluster (one order) and one counter
//! `{prefix}:seq` holding the last id handed out. Each stream entry has the explicit id
//! `<id>-0` and the fields `topic`, `class` (the class index), `key` (empty: none) and
//! `body` (the encoded frame without its `id:` line).
//!
//! Invariants:
//! 1. [`APPEND`] runs atomically in Redis: it takes a batch's ids from the counter with one
//!    `INCRBY` and `XADD`s each event under its id, so ids are contiguous per batch and the
//!    stream's order is the counter's.
//! 2. A missing counter (a new Redis, or one that lost its data) is created at the largest of
//!    Redis's clock in microseconds, the caller's floor and the stream's top id plus one: new
//!    ids start above every id handed out before, so none is ever reused. Microsecond ids
//!    (~1.8e15 today) stay below 2^53 for two centuries, exact in Lua's doubles and in
//!    JavaScript.
//! 3. Every read and write has a socket timeout, so a dead connection shows up as an error,
//!    never as a hang; a blocking read's timeout is longer than its `BLOCK`.

use std::time::Duration;

use bytes::Bytes;
use redis::{Client, Value};

use super::{BusConfig, BusError, Connection, Connector, Entry, Read, StreamId};
use crate::publish::{Class, Prepared};

/// The append script (invariants 1 and 2). KEYS: stream, counter. ARGV: floor, maxlen, then
/// topic, class, key, body per event. Returns the first event's id (with no events, the id
/// the next event will get).
pub const APPEND: &str = r#"
local n = (#ARGV - 2) / 4
if not redis.call('GET', KEYS[2]) then
  local t = redis.call('TIME')
  local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local floor = tonumber(ARGV[1])
  if floor > start then start = floor end
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if top[1] then
    local id = tonumber(string.match(top[1][1], '^(%d+)'))
    if id and id + 1 > start then start = id + 1 end
  end
  redis.call('SET', KEYS[2], string.format('%.0f', start - 1))
end
local first = redis.call('INCRBY', KEYS[2], n) - n + 1
for i = 0, n - 1 do
  local a = 3 + 4 * i
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], string.format('%.0f-0', first + i),
    'topic', ARGV[a], 'class', ARGV[a + 1], 'key', ARGV[a + 2], 'body', ARGV[a + 3])
end
return first
"#;

/// Longest a connection attempt waits.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to one Redis.
pub struct RedisConnector {
    client: Client,
    described: String,
    stream: String,
    counter: String,
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
            maxlen: config.maxlen,
            write_timeout: io_timeout,
        })
    }
}

/// `url` without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
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
    maxlen: u64,
}

impl RedisConnection {
    fn append_cmd(&self, events: &[&Prepared], floor: u64) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(2).arg(&self.stream).arg(&self.counter).arg(floor).arg(self.maxlen);
        for e in events {
            cmd.arg(&*e.topic).arg(e.class.index()).arg(e.key.as_deref().unwrap_or("")).arg(&e.body[..]);
        }
        cmd
    }
}

impl Connection for RedisConnection {
    fn append(&mut self, events: &[&Prepared], floor: u64) -> Result<u64, BusError> {
        let result: redis::RedisResult<i64> = self.append_cmd(events, floor).query(&mut self.con);
        let first = match result {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                // The script cache was flushed (SCRIPT FLUSH); load it again once.
                self.sha = load_script(&mut self.con)?;
                self.append_cmd(events, floor).query(&mut self.con).map_err(unreachable)?
            }
            other => other.map_err(unreachable)?,
        };
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

    fn range_after(&mut self, after: u64, count: usize) -> Result<Read, BusError> {
        let value: Value = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg(format!("({after}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query(&mut self.con)
            .map_err(unreachable)?;
        entries(value)
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
            _ => {}
        }
    }
    let (Some(topic), Some(body)) = (topic, body) else { return Err(bad("missing topic or body")) };
    Ok(Entry { id, topic, class, key, body })
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
    }
}
