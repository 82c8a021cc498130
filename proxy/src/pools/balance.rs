//! How an `http` pool picks an upstream among the available ones (health up, not
//! ejected, not already tried by this request):
//!
//! - `round_robin` (default): each request starts one further along the list;
//! - `least_conn`: the fewest requests in flight through this proxy; ties go round robin;
//! - `hash`: weighted rendezvous hashing (HRW, the session pool's [`crate::routing::hrw`])
//!   of a header's or cookie's value on the upstream addresses: a key keeps its upstream
//!   while that upstream is available, and only the keys of an upstream that leaves move.
//!   A request without the key is balanced round robin.

use std::time::Instant;

pub use crate::config::runtime::pools::{Balance, HashOn};

use super::HttpPool;

/// The value of cookie `name` in one `Cookie` header value.
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}

/// The hash key of a request for `on`, if present and non-empty.
pub fn hash_key<'a>(on: &HashOn, headers: &'a http::HeaderMap) -> Option<&'a [u8]> {
    match on {
        HashOn::Header(name) => headers
            .get(name)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty()),
        HashOn::Cookie(name) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .find_map(|v| cookie_value(v.as_bytes(), name))
            .filter(|v| !v.is_empty()),
    }
}

/// Index in `ups` (the pool's members for this request) of the upstream for this
/// request, or `None` when none is available. `key`: the hash key (only used by `hash`);
/// `excluded`: upstreams this request already failed on.
pub fn pick(
    pool: &HttpPool,
    ups: &[std::sync::Arc<super::Upstream>],
    key: Option<&[u8]>,
    now: Instant,
    excluded: &[usize],
) -> Option<usize> {
    let n = ups.len();
    if n == 0 {
        return None;
    }
    let usable = |i: usize| !excluded.contains(&i) && ups[i].available(now);
    match (&pool.balance, key) {
        (Balance::Hash(_), Some(key)) => {
            let mut best: Option<(usize, f64)> = None;
            for (i, u) in ups.iter().enumerate() {
                if !usable(i) {
                    continue;
                }
                let s = crate::routing::hrw::score(&u.id, 1, key);
                if best.is_none_or(|(_, b)| s > b) {
                    best = Some((i, s));
                }
            }
            best.map(|(i, _)| i)
        }
        (Balance::LeastConn, _) => {
            let start = pool.next_cursor() % n;
            let mut best: Option<(usize, usize)> = None;
            for k in 0..n {
                let i = (start + k) % n;
                if !usable(i) {
                    continue;
                }
                let load = ups[i].in_flight();
                if best.is_none_or(|(_, b)| load < b) {
                    best = Some((i, load));
                }
            }
            best.map(|(i, _)| i)
        }
        _ => {
            let start = pool.next_cursor() % n;
            (0..n).map(|k| (start + k) % n).find(|&i| usable(i))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EjectSpec, HttpPool};
    use super::*;
    use std::time::Duration;

    fn pool(n: u16, balance: Balance) -> HttpPool {
        let addrs = (1..=n)
            .map(|p| format!("127.0.0.1:{p}").parse().expect("addr"))
            .collect();
        let e = EjectSpec {
            failures: 1,
            cooldown: Duration::from_secs(60),
        };
        HttpPool::new("p".into(), addrs, balance, None, e)
    }

    #[test]
    fn round_robin_spreads_evenly_and_skips_the_unavailable() {
        let p = pool(3, Balance::RoundRobin);
        let now = Instant::now();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[pick(&p, &p.members(), None, now, &[]).expect("pick")] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        p.members()[1].record_failure(&p.eject, now);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[pick(&p, &p.members(), None, now, &[]).expect("pick")] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(counts[0] >= 100 && counts[2] >= 100, "{counts:?}");
        assert_eq!(pick(&p, &p.members(), None, now, &[0, 2]), None);
    }

    #[test]
    fn least_conn_prefers_the_idle_upstream() {
        let p = pool(3, Balance::LeastConn);
        let now = Instant::now();
        let _a = p.members()[0].begin();
        let _b = p.members()[1].begin();
        let _b2 = p.members()[1].begin();
        for _ in 0..10 {
            assert_eq!(pick(&p, &p.members(), None, now, &[]), Some(2));
        }
        let _c = p.members()[2].begin();
        let _c2 = p.members()[2].begin();
        assert_eq!(pick(&p, &p.members(), None, now, &[]), Some(0));
        // Excluded (already failed for this request): the least loaded of the others.
        let x = pick(&p, &p.members(), None, now, &[0]).expect("pick");
        assert!(x == 1 || x == 2, "{x}");
    }

    #[test]
    fn hash_is_sticky_and_moves_only_the_lost_upstreams_keys() {
        let on = HashOn::Header(http::HeaderName::from_static("x-user"));
        let p = pool(4, Balance::Hash(on));
        let now = Instant::now();
        let keys: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
        let first: Vec<usize> = keys
            .iter()
            .map(|k| pick(&p, &p.members(), Some(k.as_bytes()), now, &[]).expect("pick"))
            .collect();
        for (k, &u) in keys.iter().zip(&first) {
            assert_eq!(
                pick(&p, &p.members(), Some(k.as_bytes()), now, &[]),
                Some(u),
                "sticky"
            );
        }
        let mut counts = [0; 4];
        for &u in &first {
            counts[u] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "spread {counts:?}");
        p.members()[2].record_failure(&p.eject, now);
        for (k, &u) in keys.iter().zip(&first) {
            let now_u = pick(&p, &p.members(), Some(k.as_bytes()), now, &[]).expect("pick");
            if u == 2 {
                assert_ne!(now_u, 2);
            } else {
                assert_eq!(now_u, u, "a key of a live upstream never moves");
            }
        }
    }

    #[test]
    fn hash_keys_from_header_and_cookie() {
        let mut h = http::HeaderMap::new();
        h.insert("x-user", http::HeaderValue::from_static("alice"));
        h.append(http::header::COOKIE, http::HeaderValue::from_static("a=1"));
        h.append(
            http::header::COOKIE,
            http::HeaderValue::from_static("b=2; sid = s-9 ;c="),
        );
        let hdr = HashOn::Header(http::HeaderName::from_static("x-user"));
        assert_eq!(hash_key(&hdr, &h), Some(&b"alice"[..]));
        assert_eq!(
            hash_key(&HashOn::Cookie("sid".into()), &h),
            Some(&b"s-9"[..])
        );
        assert_eq!(hash_key(&HashOn::Cookie("c".into()), &h), None, "empty");
        assert_eq!(hash_key(&HashOn::Cookie("zz".into()), &h), None);
        assert_eq!(cookie_value(b"x=1;y=2", "y"), Some(&b"2"[..]));
    }
}
