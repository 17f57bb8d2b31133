//! The Redis peer: a lean RESP client, the news-feed dataset loaded as
//! Redis keys, and the standard slate as Redis serves it.
//!
//! Two layouts, both fair to Redis:
//! - `hash`: each entity a hash (`u:<id>`, `a:<id>`) with one field per
//!   feature (numbers as decimal text, the embedding as 256 raw bytes); a
//!   slate is one pipeline of 51 `HMGET`s of the projected fields;
//! - `blob`: each entity one string (`ub:<id>`, `ab:<id>`) holding the packed
//!   row (10 int64, 10 float64, 64 float32, little-endian); a slate is one
//!   `MGET` of 51 keys, which returns whole rows (no projection).
//!
//! Redis keeps only the latest value, so only each entity's newest version
//! is loaded. The client writes whole pipelines with one `write` and parses
//! replies in place without building values, so it costs the machine's two
//! cores as little as the Tessera client does.

use crate::net_bench::RowWriter as _;
use crate::net_bench::{BoxError, GroupFeatures};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Entities per loading pipeline.
const LOAD_PIPELINE: usize = 500;

/// How entities are stored in Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// A hash per entity, `HMGET` of the projected fields.
    Hash,
    /// A packed row per entity, `MGET` of whole rows.
    Blob,
}

/// A blocking RESP2 connection.
pub struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
    line: Vec<u8>,
    scratch: Vec<u8>,
}

/// What one reply held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Bulk strings that were present.
    pub present: u64,
    /// Nil bulk strings.
    pub nil: u64,
}

impl Resp {
    /// Connects to a Redis server.
    pub fn connect(addr: &str) -> Result<Resp, BoxError> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Resp {
            reader: BufReader::with_capacity(64 << 10, stream.try_clone()?),
            writer: stream,
            out: Vec::with_capacity(4096),
            line: Vec::with_capacity(64),
            scratch: Vec::new(),
        })
    }

    /// Queues one command.
    pub fn command<'a>(&mut self, args: impl ExactSizeIterator<Item = &'a [u8]>) {
        let _ = write!(self.out, "*{}\r\n", args.len());
        for a in args {
            let _ = write!(self.out, "${}\r\n", a.len());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    /// Sends the queued commands in one write.
    pub fn send(&mut self) -> Result<(), BoxError> {
        self.writer.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// Reads one reply, counting the bulk strings in it (nested arrays
    /// included). An error reply is an error.
    pub fn read(&mut self) -> Result<Counted, BoxError> {
        let mut counted = Counted::default();
        self.read_into(&mut counted)?;
        Ok(counted)
    }

    fn read_into(&mut self, counted: &mut Counted) -> Result<(), BoxError> {
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line)?;
        let line = self
            .line
            .strip_suffix(b"\r\n")
            .ok_or("a RESP line without CRLF")?;
        let (kind, rest) = line.split_first().ok_or("an empty RESP line")?;
        let number = || -> Result<i64, BoxError> { Ok(std::str::from_utf8(rest)?.parse()?) };
        match kind {
            b'+' | b':' => Ok(()),
            b'-' => Err(format!("redis: {}", String::from_utf8_lossy(rest)).into()),
            b'$' => {
                let n = number()?;
                if n < 0 {
                    counted.nil += 1;
                    return Ok(());
                }
                self.scratch.resize(n as usize + 2, 0);
                self.reader.read_exact(&mut self.scratch)?;
                counted.present += 1;
                Ok(())
            }
            b'*' => {
                for _ in 0..number()?.max(0) {
                    self.read_into(counted)?;
                }
                Ok(())
            }
            other => Err(format!("unexpected RESP type byte {other:#04x}").into()),
        }
    }
}

/// The packed row of the blob layout.
fn blob(values: &[tessera_protocol::Value]) -> Vec<u8> {
    use tessera_protocol::Value;
    let mut out = Vec::with_capacity(416);
    for v in values {
        match v {
            Value::Int64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::Float64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::Embedding(e) => e
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            _ => {}
        }
    }
    out
}

/// One field value of the hash layout.
fn field(v: &tessera_protocol::Value) -> Vec<u8> {
    use tessera_protocol::Value;
    match v {
        Value::Int64(x) => x.to_string().into_bytes(),
        Value::Float64(x) => x.to_string().into_bytes(),
        Value::Embedding(e) => e.iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => Vec::new(),
    }
}

/// Key of entity `id` of `group` ("u" or "a") in `layout`.
fn key(group: &str, layout: Layout, id: u64) -> String {
    match layout {
        Layout::Hash => format!("{group}:{id}"),
        Layout::Blob => format!("{group}b:{id}"),
    }
}

/// Loads `n` entities of one group; `values(id)` gives the newest
/// version's values in `features.columns()` order, key first.
pub fn load(
    addr: &str,
    layout: Layout,
    group: &str,
    n: u64,
    features: &GroupFeatures,
    values: impl Fn(u64) -> Vec<tessera_protocol::Value>,
) -> Result<u64, BoxError> {
    let mut writer = RedisWriter {
        redis: Resp::connect(addr)?,
        layout,
        group: group.to_string(),
        names: features.names(),
    };
    let ids: Vec<u64> = (0..n).collect();
    for chunk in ids.chunks(LOAD_PIPELINE) {
        let rows: Vec<_> = chunk.iter().map(|&id| (id, values(id))).collect();
        writer.write(&rows)?;
    }
    Ok(n)
}

/// Writes whole rows of one group, pipelined.
pub struct RedisWriter {
    redis: Resp,
    layout: Layout,
    group: String,
    names: Vec<String>,
}

impl RedisWriter {
    /// A writer of rows of `group` ("u" or "a") with `features`.
    pub fn connect(
        addr: &str,
        layout: Layout,
        group: &str,
        features: &GroupFeatures,
    ) -> Result<RedisWriter, BoxError> {
        Ok(RedisWriter {
            redis: Resp::connect(addr)?,
            layout,
            group: group.to_string(),
            names: features.names(),
        })
    }
}

impl crate::net_bench::RowWriter for RedisWriter {
    fn write(&mut self, rows: &[(u64, Vec<tessera_protocol::Value>)]) -> Result<(), BoxError> {
        for (id, row) in rows {
            let k = key(&self.group, self.layout, *id);
            match self.layout {
                Layout::Hash => {
                    let fields: Vec<Vec<u8>> = row[1..].iter().map(field).collect();
                    let mut args: Vec<&[u8]> = vec![b"HSET", k.as_bytes()];
                    for (name, value) in self.names.iter().zip(&fields) {
                        args.push(name.as_bytes());
                        args.push(value);
                    }
                    self.redis.command(args.into_iter());
                }
                Layout::Blob => {
                    let b = blob(&row[1..]);
                    self.redis
                        .command([&b"SET"[..], k.as_bytes(), &b].into_iter());
                }
            }
        }
        self.redis.send()?;
        for _ in rows {
            self.redis.read()?;
        }
        Ok(())
    }
}

/// Slates against Redis.
pub struct RedisSlates {
    redis: Resp,
    layout: Layout,
    user_fields: Vec<String>,
    article_fields: Vec<String>,
}

impl RedisSlates {
    /// Connects; the slate projects `user_fields` and `article_fields`.
    pub fn connect(
        addr: &str,
        layout: Layout,
        user_fields: Vec<String>,
        article_fields: Vec<String>,
    ) -> Result<RedisSlates, BoxError> {
        Ok(RedisSlates {
            redis: Resp::connect(addr)?,
            layout,
            user_fields,
            article_fields,
        })
    }
}

impl crate::net_bench::SlateClient for RedisSlates {
    fn slate(&mut self, user: u64, articles: &[u64]) -> Result<u64, BoxError> {
        match self.layout {
            Layout::Hash => {
                let hmget = |r: &mut Resp, k: String, fields: &[String]| {
                    let args = [&b"HMGET"[..], k.as_bytes()]
                        .into_iter()
                        .chain(fields.iter().map(|f| f.as_bytes()));
                    r.command(args.collect::<Vec<_>>().into_iter());
                };
                hmget(
                    &mut self.redis,
                    key("u", Layout::Hash, user),
                    &self.user_fields,
                );
                for &a in articles {
                    hmget(
                        &mut self.redis,
                        key("a", Layout::Hash, a),
                        &self.article_fields,
                    );
                }
                self.redis.send()?;
                let mut found = 0;
                for _ in 0..=articles.len() {
                    if self.redis.read()?.present > 0 {
                        found += 1;
                    }
                }
                Ok(found)
            }
            Layout::Blob => {
                let keys: Vec<String> = std::iter::once(key("u", Layout::Blob, user))
                    .chain(articles.iter().map(|&a| key("a", Layout::Blob, a)))
                    .collect();
                self.redis.command(
                    std::iter::once(&b"MGET"[..])
                        .chain(keys.iter().map(|k| k.as_bytes()))
                        .collect::<Vec<_>>()
                        .into_iter(),
                );
                self.redis.send()?;
                Ok(self.redis.read()?.present)
            }
        }
    }
}
