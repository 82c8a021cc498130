//! Weighted rendezvous hashing (HRW) on stable worker ids.
//!
//! For a key, every worker gets the score `-weight / ln(u)` where `u` in (0, 1) is a
//! deterministic 64-bit hash of `(worker id, key)`; the highest score wins. The hash is
//! FNV-1a 64 finished with the murmur3 `fmix64` avalanche: fixed, so every proxy process
//! (any version, any host) maps a key to the same worker given the same config.
//!
//! Adding a worker moves only the keys it now wins (~1/N of foreign keys), removing one
//! moves only its own keys. That is the limit of hashing: foreign (unsigned) keys on the
//! moved fraction do land elsewhere on scale-out; signed ids never move (see `affinity`).

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `worker_id`, a 0xff separator (never in an id) and `key`, then fmix64.
pub fn hash(worker_id: &str, key: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in worker_id
        .as_bytes()
        .iter()
        .chain([0xffu8].iter())
        .chain(key)
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// The murmur3 64-bit finalizer: a bijective avalanche mix.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The weighted score of one worker for `key`.
pub fn score(worker_id: &str, weight: u32, key: &[u8]) -> f64 {
    // 53 high bits → (0, 1), never 0 or 1.
    let u = ((hash(worker_id, key) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight.max(1)) / u.ln()
}

/// Index of the winning `(id, weight)` for `key`; `None` only for an empty list.
/// Ties (practically impossible) go to the smaller id, so the result is order-independent.
pub fn pick<'a, I>(workers: I, key: &[u8]) -> Option<usize>
where
    I: IntoIterator<Item = (&'a str, u32)>,
{
    let mut best: Option<(usize, f64, &str)> = None;
    for (i, (id, w)) in workers.into_iter().enumerate() {
        let s = score(id, w, key);
        let better = match best {
            None => true,
            Some((_, bs, bid)) => s > bs || (s == bs && id < bid),
        };
        if better {
            best = Some((i, s, id));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_W1_ABC: u64 = 7_725_582_817_459_035_207;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("w{i}")).collect()
    }

    #[test]
    fn deterministic_and_order_independent() {
        let a = ids(5);
        let fwd: Vec<(&str, u32)> = a.iter().map(|s| (s.as_str(), 1)).collect();
        let mut rev = fwd.clone();
        rev.reverse();
        for k in 0..500 {
            let key = format!("key-{k}");
            let i = pick(fwd.iter().copied(), key.as_bytes()).expect("some");
            let j = pick(rev.iter().copied(), key.as_bytes()).expect("some");
            assert_eq!(fwd[i].0, rev[j].0);
        }
        // Pinned value: the function must never change between releases (every proxy of a
        // deployment, old or new, must agree).
        assert_eq!(hash("w1", b"abc"), PINNED_W1_ABC);
        assert_ne!(hash("w1", b"abc"), hash("w2", b"abc"));
    }

    #[test]
    fn balanced_and_minimal_moves() {
        let n = 20_000;
        let three = ids(3);
        let four = ids(4);
        let l3: Vec<(&str, u32)> = three.iter().map(|s| (s.as_str(), 1)).collect();
        let l4: Vec<(&str, u32)> = four.iter().map(|s| (s.as_str(), 1)).collect();
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for k in 0..n {
            let key = format!("session-{k}");
            let a = pick(l3.iter().copied(), key.as_bytes()).expect("some");
            let b = pick(l4.iter().copied(), key.as_bytes()).expect("some");
            counts[a] += 1;
            if l3[a].0 != l4[b].0 {
                moved += 1;
                assert_eq!(l4[b].0, "w4", "a key may only move to the new worker");
            }
        }
        let mean = n as f64 / 3.0;
        let max = *counts.iter().max().expect("3") as f64;
        assert!(max / mean < 1.05, "{counts:?}");
        let frac = moved as f64 / n as f64;
        assert!((0.22..0.28).contains(&frac), "moved {frac}");
    }

    #[test]
    fn weights_bias_the_share() {
        let l = [("a", 1u32), ("b", 3u32)];
        let b = (0..20_000)
            .filter(|k| pick(l.iter().copied(), format!("{k}").as_bytes()) == Some(1))
            .count();
        let share = b as f64 / 20_000.0;
        assert!((0.72..0.78).contains(&share), "{share}");
    }
}
