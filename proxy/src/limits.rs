//! Exact token buckets keyed by string in a sharded map (bounded size, idle eviction),
//! and concurrency counters with RAII guards.
//!
//! A bucket holds `tokens` (at most `burst`) and the time of its last update; it refills
//! at `rate` tokens per second. Rate and burst are passed on every call (read from the live
//! config), so a reload changes limits without losing state. A bucket that has refilled to
//! `burst` is indistinguishable from a missing one, so evicting it is exact.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::security::RateFile;

const SHARDS: usize = 16;

/// Result of one bucket check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// `RateLimit-Limit`: the bucket size.
    pub limit: u32,
    /// `RateLimit-Remaining`: whole tokens left after this request.
    pub remaining: u32,
    /// `RateLimit-Reset`: seconds until the bucket is full again.
    pub reset_secs: u64,
    /// `Retry-After` when refused: seconds until one token is available (>= 1).
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, r: &RateFile, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * r.rate).min(f64::from(r.burst));
        self.last = now;
    }
}

/// Pure bucket step (unit-tested): takes one token if available.
fn step(b: &mut Bucket, r: &RateFile, now: Instant) -> Decision {
    b.refill(r, now);
    let allowed = b.tokens >= 1.0;
    if allowed {
        b.tokens -= 1.0;
    }
    let burst = f64::from(r.burst);
    let reset = ((burst - b.tokens) / r.rate).ceil().max(0.0);
    let retry = ((1.0 - b.tokens) / r.rate).ceil().max(1.0);
    Decision {
        allowed,
        limit: r.burst,
        remaining: b.tokens.floor().max(0.0) as u32,
        reset_secs: reset as u64,
        retry_after_secs: retry as u64,
    }
}

/// Sharded map of token buckets.
pub struct Buckets {
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }
}

impl Buckets {
    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Bucket>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Takes a token from `key`'s bucket. `max_per_shard` bounds memory: when a shard is
    /// full, refilled (idle) buckets are dropped, then the least recently used half.
    pub fn check(&self, key: &str, r: &RateFile, max_per_shard: usize) -> Decision {
        self.check_at(key, r, max_per_shard, Instant::now())
    }

    fn check_at(&self, key: &str, r: &RateFile, max_per_shard: usize, now: Instant) -> Decision {
        let mut m = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = m.get_mut(key) {
            return step(b, r, now);
        }
        if m.len() >= max_per_shard {
            evict(&mut m, r, max_per_shard, now);
        }
        let mut b = Bucket {
            tokens: f64::from(r.burst),
            last: now,
        };
        let d = step(&mut b, r, now);
        m.insert(key.to_string(), b);
        d
    }

    /// Whether `key`'s bucket has a token, without taking it (a missing bucket is full):
    /// `Ok`, or `Err(seconds until one token is back)`.
    pub fn peek(&self, key: &str, r: &RateFile) -> Result<(), u64> {
        let now = Instant::now();
        let m = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = m.get(key) else {
            return Ok(());
        };
        let mut b = *b;
        b.refill(r, now);
        if b.tokens >= 1.0 {
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / r.rate).ceil().max(1.0) as u64)
        }
    }

    /// Entries tracked (all shards).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn evict(m: &mut HashMap<String, Bucket>, r: &RateFile, max: usize, now: Instant) {
    // Idle: refilled to the burst of *this* limit (a good proxy for all limits sharing
    // the map, which use similar rates).
    let full = Duration::from_secs_f64(f64::from(r.burst) / r.rate);
    m.retain(|_, b| now.saturating_duration_since(b.last) < full);
    if m.len() >= max && !m.is_empty() {
        let mut lasts: Vec<Instant> = m.values().map(|b| b.last).collect();
        lasts.sort_unstable();
        let cut = lasts[lasts.len() / 2];
        m.retain(|_, b| b.last > cut);
    }
}

/// Concurrency counters (e.g. WebSockets per tenant).
#[derive(Default)]
pub struct Counters {
    map: Mutex<HashMap<String, u32>>,
}

/// Holds one unit of a [`Counters`] entry; released on drop.
pub struct CounterGuard {
    counters: Arc<Counters>,
    key: String,
}

impl Counters {
    /// Takes one unit for `key` if fewer than `max` are held.
    pub fn acquire(self: &Arc<Self>, key: &str, max: u32) -> Option<CounterGuard> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(CounterGuard {
            counters: self.clone(),
            key: key.to_string(),
        })
    }

    /// Units held for `key`.
    pub fn get(&self, key: &str) -> u32 {
        self.map
            .lock()
            .map(|m| m.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for CounterGuard {
    fn drop(&mut self) {
        let mut m = self.counters.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_takes_nothing() {
        let b = Buckets::default();
        let r = RateFile {
            rate: 0.001,
            burst: 2,
        };
        assert!(b.peek("k", &r).is_ok());
        assert!(b.check("k", &r, 100).allowed);
        assert!(b.peek("k", &r).is_ok());
        assert!(b.peek("k", &r).is_ok(), "peeking twice takes nothing");
        assert!(b.check("k", &r, 100).allowed);
        let retry = b.peek("k", &r).expect_err("empty");
        assert!(retry >= 999, "{retry}");
        assert!(!b.check("k", &r, 100).allowed);
        assert!(b.peek("other", &r).is_ok());
    }

    #[test]
    fn bucket_math_is_exact() {
        let r = RateFile {
            rate: 10.0,
            burst: 5,
        };
        let b = Buckets::default();
        let t0 = Instant::now();
        for i in 0..5 {
            let d = b.check_at("k", &r, 100, t0);
            assert!(d.allowed, "burst {i}");
            assert_eq!(d.remaining, 4 - i);
            assert_eq!(d.limit, 5);
        }
        let d = b.check_at("k", &r, 100, t0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
        assert_eq!(d.reset_secs, 1); // 5 tokens at 10/s = 0.5 s -> 1
                                     // 1 s later: 10 tokens refilled, capped at 5.
        let t1 = t0 + Duration::from_secs(1);
        let d = b.check_at("k", &r, 100, t1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 4);
        // Over 10 s offering 20/s: admitted = burst + rate * T exactly.
        let b = Buckets::default();
        let mut admitted = 0;
        for i in 0..200u64 {
            let t = t0 + Duration::from_millis(i * 50);
            if b.check_at("x", &r, 100, t).allowed {
                admitted += 1;
            }
        }
        // 9.95 s * 10/s + 5 = 104.5 -> 104
        assert_eq!(admitted, 104);
    }

    #[test]
    fn keys_are_independent_and_bounded() {
        let r = RateFile {
            rate: 1.0,
            burst: 1,
        };
        let b = Buckets::default();
        let t0 = Instant::now();
        assert!(b.check_at("a", &r, 4, t0).allowed);
        assert!(!b.check_at("a", &r, 4, t0).allowed);
        assert!(b.check_at("b", &r, 4, t0).allowed);
        for i in 0..1000 {
            b.check_at(&format!("k{i}"), &r, 4, t0 + Duration::from_millis(i));
        }
        assert!(b.len() <= 4 * SHARDS, "bounded: {}", b.len());
    }

    #[test]
    fn counters_release_on_drop() {
        let c = Arc::new(Counters::default());
        let g1 = c.acquire("t", 2).expect("1");
        let _g2 = c.acquire("t", 2).expect("2");
        assert!(c.acquire("t", 2).is_none());
        drop(g1);
        assert_eq!(c.get("t"), 1);
        assert!(c.acquire("t", 2).is_some());
    }
}
