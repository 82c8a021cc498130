//! Shared rate-limit store on Redis, so several proxy nodes enforce one limit.
//!
//! Each check is one `EVALSHA` of a GCRA script (the token bucket's exact equivalent:
//! `burst` at once, then `rate` per second; time from Redis `TIME`, so node clocks do not
//! matter), through the maintained `redis` crate: one multiplexed connection per process
//! ([`redis::aio::ConnectionManager`], which reconnects by itself), shared by every request
//! without a lock. Each command gets its own reply slot in the connection's queue: a check
//! that gives up after `limits.store.timeout` drops its slot, and the late reply is read and
//! discarded by the connection, never handed to a later command. After any failure the
//! connection is replaced by a fresh one (connected and the script loaded in the
//! background, not on a request's clock), so nothing of a slow or broken stream survives.
//!
//! When Redis is unreachable, slow or refuses the login, the check fails open or closed
//! (`limits.store.fail`); the store is then skipped for [`RETRY_AFTER_DOWN`] before trying
//! again. State goes to the `hotplex_proxy_ratelimit_store_up` gauge and a WARN/INFO log
//! line on every transition (in [`crate::security`]; "up" only on a real reply).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, TlsCertificates};

use crate::config::security::{RateFile, StoreSettings};
use crate::limits::Decision;

/// Time the store is skipped after a failure.
pub const RETRY_AFTER_DOWN: Duration = Duration::from_secs(1);
/// Longest time one connection attempt (TCP, TLS, AUTH, SELECT) may take. It runs in the
/// background; a check never waits longer than `limits.store.timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection in use and the settings it was made for.
struct Live {
    settings: StoreSettings,
    /// Bumped on every replacement, so a failed check replaces only the connection it used.
    generation: u64,
    conn: ConnectionManager,
    /// Set when the background connect failed: the next check starts a new one instead of
    /// reading the failed attempt's cached error.
    failed: Arc<AtomicBool>,
}

/// The store client (one per process; the settings come from the live config, a change
/// of address, credentials or CA makes a new connection).
pub struct RedisStore {
    live: Mutex<Option<Live>>,
    down_until: Mutex<Option<Instant>>,
    script: redis::Script,
}

impl Default for RedisStore {
    fn default() -> Self {
        RedisStore {
            live: Mutex::new(None),
            down_until: Mutex::new(None),
            script: redis::Script::new(hotplex_common::gcra::SCRIPT),
        }
    }
}

/// Why a store check had no answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store skipped after a recent failure")]
    Down,
    #[error("timeout")]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply {0:?}")]
    Reply(Vec<i64>),
}

/// A client for `s`: plain TCP or TLS (with the configured CA, else the web PKI roots),
/// `AUTH` with the configured user and password, `SELECT db`.
fn client(s: &StoreSettings) -> Result<Client, redis::RedisError> {
    let scheme = if s.tls { "rediss" } else { "redis" };
    let host = if s.host.contains(':') {
        format!("[{}]", s.host)
    } else {
        s.host.clone()
    };
    let info = format!("{scheme}://{host}:{}/{}", s.port, s.db).into_connection_info()?;
    let mut redis_settings = info.redis_settings().clone();
    if let Some(u) = &s.username {
        redis_settings = redis_settings.set_username(u);
    }
    if let Some(p) = &s.password {
        redis_settings = redis_settings.set_password(p.expose());
    }
    let info = info.set_redis_settings(redis_settings);
    if !s.tls {
        return Client::open(info);
    }
    // rustls needs a process-wide crypto provider; ring is the one this build carries.
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match &s.tls_ca {
        None => Client::open(info),
        Some(ca) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.pem.clone()),
            },
        ),
    }
}

/// The decision in a script reply.
fn decision(v: &[i64], r: &RateFile) -> Result<Decision, StoreError> {
    let &[allowed, remaining, retry_ms, reset_ms] = v else {
        return Err(StoreError::Reply(v.to_vec()));
    };
    if !(allowed == 0 || allowed == 1) {
        return Err(StoreError::Reply(v.to_vec()));
    }
    let ms_to_s = |ms: i64| (ms.max(0) as u64).div_ceil(1000);
    Ok(Decision {
        allowed: allowed == 1,
        limit: r.burst,
        remaining: remaining.clamp(0, i64::from(r.burst)) as u32,
        reset_secs: ms_to_s(reset_ms),
        retry_after_secs: ms_to_s(retry_ms).max(1),
    })
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
        let (generation, mut conn) = match self.connection(s) {
            Ok(c) => c,
            Err(e) => {
                self.back_off();
                return Err(e);
            }
        };
        let full_key = format!("{}{key}", s.prefix);
        let call = async {
            let v: Vec<i64> = self
                .script
                .key(&full_key)
                .arg(r.rate)
                .arg(r.burst)
                .invoke_async(&mut conn)
                .await?;
            decision(&v, r)
        };
        // On timeout the command's future (and its reply slot) is dropped here: its reply,
        // should it still come, is discarded by the connection.
        let res = tokio::time::timeout(s.timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout));
        if res.is_err() {
            self.back_off();
            self.replace(s, generation);
        }
        res
    }

    /// Skips the store for [`RETRY_AFTER_DOWN`].
    fn back_off(&self) {
        if let Ok(mut d) = self.down_until.lock() {
            *d = Some(Instant::now() + RETRY_AFTER_DOWN);
        }
    }

    /// The connection for `s` (made, lazily, when there is none, the settings changed or
    /// the last connection attempt failed).
    fn connection(&self, s: &StoreSettings) -> Result<(u64, ConnectionManager), StoreError> {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(l) = live
            .as_ref()
            .filter(|l| l.settings == *s && !l.failed.load(Ordering::Relaxed))
        {
            return Ok((l.generation, l.conn.clone()));
        }
        let generation = live.as_ref().map_or(0, |l| l.generation + 1);
        let l = self.connect(s, generation)?;
        let conn = l.conn.clone();
        *live = Some(l);
        Ok((generation, conn))
    }

    /// Replaces the connection a failed check used (unless that happened already).
    fn replace(&self, s: &StoreSettings, generation: u64) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if live
            .as_ref()
            .is_some_and(|l| l.generation != generation || l.settings != *s)
        {
            return;
        }
        *live = match self.connect(s, generation + 1) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!(error = %e, "rate-limit store: no client");
                None
            }
        };
    }

    /// A new connection manager for `s`; it connects and loads the script in the
    /// background (bounded by [`CONNECT_TIMEOUT`]), so the next check finds it ready.
    fn connect(&self, s: &StoreSettings, generation: u64) -> Result<Live, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Replies are awaited under `limits.store.timeout` by each check.
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(RETRY_AFTER_DOWN);
        let conn = ConnectionManager::new_lazy_with_config(client(s)?, config)?;
        let failed = Arc::new(AtomicBool::new(false));
        let (mut warm, script, flag) = (conn.clone(), self.script.clone(), failed.clone());
        tokio::spawn(async move {
            let load = script.load_async(&mut warm);
            let res = tokio::time::timeout(CONNECT_TIMEOUT, load).await;
            if !matches!(res, Ok(Ok(_))) {
                flag.store(true, Ordering::Relaxed);
                if let Ok(Err(e)) = res {
                    tracing::debug!(error = %e, "rate-limit store: connecting failed");
                }
            }
        });
        Ok(Live {
            settings: s.clone(),
            generation,
            conn,
            failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::store::{store, StoreFile};

    #[test]
    fn replies_to_decisions() {
        let r = RateFile {
            rate: 2.0,
            burst: 5,
        };
        let d = decision(&[1, 4, 0, 500], &r).expect("allowed");
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining, d.reset_secs), (5, 4, 1));
        let d = decision(&[0, 0, 1500, 2500], &r).expect("refused");
        assert!(!d.allowed);
        assert_eq!((d.retry_after_secs, d.reset_secs), (2, 3));
        // Remaining is clamped to the burst, retry is at least 1 s.
        let d = decision(&[1, 99, 0, 0], &r).expect("clamped");
        assert_eq!((d.remaining, d.retry_after_secs), (5, 1));
        for bad in [
            &[][..],
            &[1, 2, 3][..],
            &[1, 2, 3, 4, 5][..],
            &[7, 0, 0, 0][..],
        ] {
            assert!(
                matches!(decision(bad, &r), Err(StoreError::Reply(_))),
                "{bad:?}"
            );
        }
    }

    fn settings(redis: &str) -> StoreSettings {
        store(
            "f",
            &StoreFile {
                redis: redis.into(),
                username: None,
                password: None,
                tls_ca_file: None,
                fail: crate::config::store::FailMode::Open,
                timeout: Duration::from_millis(200),
                prefix: "t:".into(),
            },
        )
        .expect("settings")
    }

    /// Nobody listens: the check fails within its timeout, the store is skipped for the
    /// back-off, and a changed address gets a new connection.
    #[tokio::test]
    async fn unreachable_fails_fast_then_backs_off() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let s = settings(&dead.to_string());
        let store = RedisStore::new();
        let r = RateFile {
            rate: 1.0,
            burst: 1,
        };
        let t = Instant::now();
        let e = store.check(&s, "k", &r).await.expect_err("no redis");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(
            matches!(e, StoreError::Redis(_) | StoreError::Timeout),
            "{e:?}"
        );
        assert!(store.is_down());
        assert!(matches!(
            store.check(&s, "k", &r).await,
            Err(StoreError::Down)
        ));
        let g0 = store
            .live
            .lock()
            .expect("lock")
            .as_ref()
            .map(|l| l.generation);
        // Replaced after the failure (generation bumped), same settings.
        assert_eq!(g0, Some(1));
        let other = settings("localhost:1");
        store.connection(&other).expect("client");
        let l = store.live.lock().expect("lock");
        assert_eq!(l.as_ref().map(|l| l.settings.port), Some(1));
        assert_eq!(l.as_ref().map(|l| l.generation), Some(2));
    }
}

/// Against a real `redis-server` behind a relay that can delay Redis' replies: the
/// scenario of issue 18 (there a reply 120 ms late with a 100 ms timeout; here 420 ms with
/// 300 ms, so that no other check of the test times out on a loaded machine).
#[cfg(test)]
mod redis_tests {
    use super::*;
    use crate::config::store::{store, StoreFile};
    use std::sync::atomic::AtomicU64;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// `redis-server` on a free loopback port, killed on drop.
    struct Server(std::process::Child, u16);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// None when redis-server is not installed (and `CI` is not set: there it must be).
    async fn redis_server() -> Option<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("CI").map_or(true, |v| v.is_empty() || v == "false"),
                    "redis-server is needed in CI: {e}"
                );
                eprintln!("SKIPPED: redis-server not installed ({e})");
                return None;
            }
        };
        let server = Server(child, port);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server never came up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }

    /// A TCP relay to `port` that holds every reply chunk for `delay_ms` before passing it on.
    async fn delaying_relay(port: u16, delay_ms: Arc<AtomicU64>) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay_port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let delay = delay_ms.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let d = delay.load(Ordering::Relaxed);
                        if d > 0 {
                            tokio::time::sleep(Duration::from_millis(d)).await;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        relay_port
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_reply_is_never_read_by_a_later_check() {
        let Some(server) = redis_server().await else {
            return;
        };
        let delay = Arc::new(AtomicU64::new(0));
        let relay = delaying_relay(server.1, delay.clone()).await;
        let s = store(
            "f",
            &StoreFile {
                redis: format!("127.0.0.1:{relay}"),
                username: None,
                password: None,
                tls_ca_file: None,
                fail: crate::config::store::FailMode::Closed,
                timeout: Duration::from_millis(300),
                prefix: "t:".into(),
            },
        )
        .expect("settings");
        let a = RateFile {
            rate: 0.0001,
            burst: 5,
        };
        let b = RateFile {
            rate: 0.0001,
            burst: 50,
        };
        let st = RedisStore::new();
        // The first check may meet the connection still being made: wait for a reply.
        let t = Instant::now();
        let first = loop {
            match st.check(&s, "a", &a).await {
                Ok(d) => break d,
                Err(_) => {
                    assert!(t.elapsed() < Duration::from_secs(10), "no reply from redis");
                    tokio::time::sleep(RETRY_AFTER_DOWN).await;
                }
            }
        };
        assert_eq!(first.remaining, 4);
        assert_eq!(st.check(&s, "b", &b).await.expect("b").remaining, 49);

        // One reply 420 ms late: the check times out (Redis still took the token).
        delay.store(420, Ordering::Relaxed);
        let e = st.check(&s, "a", &a).await.expect_err("late");
        assert!(matches!(e, StoreError::Timeout), "{e:?}");
        delay.store(0, Ordering::Relaxed);
        // allow-sleep: the 1 s back-off after a failure is the behaviour under test
        tokio::time::sleep(RETRY_AFTER_DOWN + Duration::from_millis(200)).await;

        // Every later decision is its own bucket's: B 48, A 2 (the late one took 3), B 47.
        let t = Instant::now();
        let next_b = loop {
            match st.check(&s, "b", &b).await {
                Ok(d) => break d,
                Err(StoreError::Down | StoreError::Timeout)
                    if t.elapsed() < Duration::from_secs(10) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        };
        assert_eq!(next_b.remaining, 48);
        assert_eq!(st.check(&s, "a", &a).await.expect("a").remaining, 2);
        assert_eq!(st.check(&s, "b", &b).await.expect("b").remaining, 47);
        for left in [1, 0] {
            assert_eq!(st.check(&s, "a", &a).await.expect("a").remaining, left);
        }
        let refused = st.check(&s, "a", &a).await.expect("a");
        assert!(!refused.allowed);
        assert_eq!(st.check(&s, "b", &b).await.expect("b").remaining, 46);
    }
}
