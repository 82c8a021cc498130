//! Shared rate-limit store on Redis, so several proxy nodes enforce one limit.
//!
//! Each check is one `EVAL` of a GCRA script (the token bucket's exact equivalent: `burst`
//! at once, then `rate` per second; time from Redis `TIME`, so node clocks do not matter).
//! The client is a minimal RESP2 client over one TCP connection (serialized by a mutex),
//! re-established on demand. When Redis is unreachable or slow (`limits.store.timeout`),
//! the check fails open or closed (`limits.store.fail`); the store is then skipped for
//! [`RETRY_AFTER_DOWN`] before trying again. State goes to the
//! `hotplex_proxy_ratelimit_store_up` gauge and a WARN/INFO log line on every transition.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::config::security::{RateFile, StoreSettings};
use crate::limits::Decision;

/// Time the store is skipped after a failure.
pub const RETRY_AFTER_DOWN: Duration = Duration::from_secs(1);

/// GCRA: KEYS[1] bucket, ARGV[1] rate/s, ARGV[2] burst. Returns
/// {allowed, remaining, retry_ms, reset_ms}.
const SCRIPT: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local em = 1000 / rate
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + em
local allow_at = new_tat - burst * em
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return {1, math.floor((now - allow_at) / em), 0, math.ceil(new_tat - now)}
"#;

struct Conn {
    addr: SocketAddr,
    io: BufStream<TcpStream>,
}

/// The store client (one per process; the address comes from the live config).
#[derive(Default)]
pub struct RedisStore {
    conn: Mutex<Option<Conn>>,
    down_until: std::sync::Mutex<Option<Instant>>,
}

/// Why a store check had no answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store skipped after a recent failure")]
    Down,
    #[error("timeout")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("redis: {0}")]
    Protocol(String),
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a.as_bytes());
        v.extend_from_slice(b"\r\n");
    }
    v
}

async fn line(io: &mut BufStream<TcpStream>) -> Result<String, StoreError> {
    let mut s = String::new();
    if io.read_line(&mut s).await? == 0 {
        return Err(StoreError::Protocol("connection closed".into()));
    }
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads an array of integers (or an error).
async fn read_ints(io: &mut BufStream<TcpStream>) -> Result<Vec<i64>, StoreError> {
    let head = line(io).await?;
    let (kind, rest) = head.split_at(head.len().min(1));
    match kind {
        "*" => {
            let n: usize = rest
                .parse()
                .map_err(|_| StoreError::Protocol(format!("bad array head {head:?}")))?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let l = line(io).await?;
                let v = l
                    .strip_prefix(':')
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| StoreError::Protocol(format!("bad integer {l:?}")))?;
                out.push(v);
            }
            Ok(out)
        }
        "-" => Err(StoreError::Protocol(rest.to_string())),
        "$" => {
            // Unexpected bulk string: consume it to keep the stream in sync.
            let n: i64 = rest.parse().unwrap_or(-1);
            if n >= 0 {
                let mut buf = vec![0u8; n as usize + 2];
                io.read_exact(&mut buf).await?;
            }
            Err(StoreError::Protocol("unexpected bulk reply".into()))
        }
        _ => Err(StoreError::Protocol(format!("unexpected reply {head:?}"))),
    }
}

impl RedisStore {
    pub fn new() -> RedisStore {
        RedisStore::default()
    }

    /// Whether the store is currently skipped after a failure.
    pub fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .map(|d| d.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    /// Takes a token from `key` in Redis.
    pub async fn check(
        &self,
        s: &StoreSettings,
        key: &str,
        r: &RateFile,
    ) -> Result<Decision, StoreError> {
        if self.is_down() {
            return Err(StoreError::Down);
        }
        let res = tokio::time::timeout(s.timeout, self.eval(s, key, r))
            .await
            .unwrap_or(Err(StoreError::Timeout));
        if res.is_err() {
            if let Ok(mut d) = self.down_until.lock() {
                *d = Some(Instant::now() + RETRY_AFTER_DOWN);
            }
            // Drop the connection: its reply stream may be out of sync.
            if let Ok(mut c) = self.conn.try_lock() {
                *c = None;
            }
        }
        res
    }

    async fn eval(
        &self,
        s: &StoreSettings,
        key: &str,
        r: &RateFile,
    ) -> Result<Decision, StoreError> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(|c| c.addr != s.addr) {
            *guard = None;
        }
        if guard.is_none() {
            let tcp = TcpStream::connect(s.addr).await?;
            let _ = tcp.set_nodelay(true);
            *guard = Some(Conn {
                addr: s.addr,
                io: BufStream::new(tcp),
            });
        }
        let Some(conn) = guard.as_mut() else {
            return Err(StoreError::Protocol("no connection".into()));
        };
        let full_key = format!("{}{key}", s.prefix);
        let rate = format!("{}", r.rate);
        let burst = r.burst.to_string();
        let cmd = encode(&["EVAL", SCRIPT, "1", &full_key, &rate, &burst]);
        let res = async {
            conn.io.write_all(&cmd).await?;
            conn.io.flush().await?;
            read_ints(&mut conn.io).await
        }
        .await;
        let v = match res {
            Ok(v) => v,
            Err(e) => {
                *guard = None;
                return Err(e);
            }
        };
        if v.len() != 4 {
            return Err(StoreError::Protocol(format!("unexpected reply {v:?}")));
        }
        let ms_to_s = |ms: i64| (ms.max(0) as u64).div_ceil(1000);
        Ok(Decision {
            allowed: v[0] == 1,
            limit: r.burst,
            remaining: v[1].clamp(0, i64::from(r.burst)) as u32,
            reset_secs: ms_to_s(v[3]),
            retry_after_secs: ms_to_s(v[2]).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_encoding() {
        assert_eq!(
            encode(&["GET", "k"]),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()
        );
    }
}
