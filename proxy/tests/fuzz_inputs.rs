//! Stable-toolchain fuzzing of the proxy's parsers of untrusted input (no nightly, no
//! libFuzzer): seeded random and mutated inputs, bounded case counts, asserting no panic
//! and the invariants below. Longer campaigns:
//!
//! ```sh
//! HOTPLEX_FUZZ_CASES=2000000 HOTPLEX_FUZZ_SEED=$RANDOM \
//!   cargo test --release -p hotplex-proxy --test fuzz_inputs -- --nocapture
//! ```
//!
//! - key extraction never panics and only yields valid `SessionId`s (1..=128 bytes of
//!   `[A-Za-z0-9._~-]`) that are a substring of the input they came from;
//! - affinity-token verification never panics, never accepts a tampered, truncated,
//!   extended or re-targeted token, nor one signed with another secret;
//! - config parsing never panics on mutated YAML.

use hotplex_common::SessionId;
use hotplex_proxy::config::KeySource;
use hotplex_proxy::routing::affinity::Signer;
use hotplex_proxy::routing::key::{extract, KeyInput};

/// Cases per target (env `HOTPLEX_FUZZ_CASES`, default 20 000).
fn cases(default: u64) -> u64 {
    std::env::var("HOTPLEX_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: deterministic, seeded by `HOTPLEX_FUZZ_SEED` (printed on start).
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Rng {
        let seed = std::env::var("HOTPLEX_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5eed_u64);
        println!("fuzz seed {seed} (salt {salt})");
        Rng((seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Bytes biased towards interesting ones.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        const SPECIAL: &[u8] = b"/.=;&\"%?# \t\r\n\x00\x7f\xff\xc3\xa9-_~";
        let n = self.below(max + 1);
        (0..n)
            .map(|_| match self.below(4) {
                0 => SPECIAL[self.below(SPECIAL.len())],
                1 => self.next() as u8,
                _ => b"abcXYZ019._~-"[self.below(13)],
            })
            .collect()
    }
}

fn is_valid_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn fuzz_key_extraction() {
    let n = cases(20_000);
    let mut rng = Rng::new(1);
    let orders: [&[KeySource]; 3] = [
        &[
            KeySource::Path,
            KeySource::Query,
            KeySource::Header,
            KeySource::Cookie,
        ],
        &[KeySource::Cookie, KeySource::Header],
        &[KeySource::Query],
    ];
    let (mut found, mut invalid, mut none) = (0u64, 0u64, 0u64);
    for _ in 0..n {
        let mut path = rng.bytes(40);
        if rng.below(2) == 0 {
            let mut p = b"/sessions/".to_vec();
            p.append(&mut path);
            path = p;
        }
        let mut query = rng.bytes(40);
        if rng.below(2) == 0 {
            let mut q = b"a=1&session_id=".to_vec();
            q.append(&mut query);
            query = q;
        }
        let header = rng.bytes(150);
        let mut c1 = rng.bytes(40);
        if rng.below(2) == 0 {
            let mut c = b"x=1; hotplex_affinity=".to_vec();
            c.append(&mut c1);
            c1 = c;
        }
        let c2 = rng.bytes(20);
        let cookies: [&[u8]; 2] = [&c1, &c2];
        let input = KeyInput {
            path: &path,
            query: (rng.below(3) > 0).then_some(query.as_slice()),
            header: (rng.below(3) > 0).then_some(header.as_slice()),
            cookies: &cookies[..rng.below(3)],
        };
        let order = orders[rng.below(orders.len())];
        match extract(order, &input) {
            Ok(Some(k)) => {
                found += 1;
                let s = k.key.as_str();
                assert!(is_valid_id(s), "invalid id accepted: {s:?}");
                assert!(SessionId::parse(s).is_ok());
                let src: &[u8] = match k.source {
                    KeySource::Path => &path,
                    KeySource::Query => input.query.unwrap_or_default(),
                    KeySource::Header => input.header.unwrap_or_default(),
                    KeySource::Cookie => {
                        if contains(&c1, s.as_bytes()) {
                            &c1
                        } else {
                            &c2
                        }
                    }
                };
                assert!(contains(src, s.as_bytes()), "{s:?} not from its source");
            }
            Ok(None) => none += 1,
            Err(_) => invalid += 1,
        }
    }
    println!("key extraction: {n} cases: {found} valid keys, {invalid} invalid, {none} keyless");
    assert!(found > 0 && invalid > 0 && none > 0, "all branches reached");
}

#[test]
fn fuzz_affinity_verify() {
    let n = cases(20_000);
    let mut rng = Rng::new(2);
    let signer = Signer::new(vec![b"fuzz-secret-0123456789".to_vec()]);
    let other = Signer::new(vec![b"another-secret-xyz".to_vec()]);
    let workers = ["w1", "w2", "worker-3", "a"];
    let tenants = ["tenant-a", "tenant-b", ""];
    // A token pins only when it verifies: a session id for the tenant, or a cookie.
    let verify = |s: &Signer, token: &str, tenant: &str| -> Option<String> {
        match s.verify_session(token, tenant) {
            Some(r) => r.ok().map(str::to_string),
            None => s.verify_cookie(token).map(|p| p.worker.to_string()),
        }
    };
    let (mut random_pinned, mut tampered) = (0u64, 0u64);
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    for _ in 0..n {
        // Random strings: never panic, and a pin is (practically) impossible.
        let raw = rng.bytes(80);
        let s = String::from_utf8_lossy(&raw).into_owned();
        let tenant = tenants[rng.below(tenants.len())];
        if verify(&signer, &s, tenant).is_some() {
            random_pinned += 1;
        }
        // Genuine tokens verify and name their worker; session ids only for their tenant.
        let w = workers[rng.below(workers.len())];
        let session = rng.below(2) == 0;
        let genuine = if session {
            signer.mint_session(w, tenant).into_string()
        } else {
            signer.cookie_value(w).to_string()
        };
        assert_eq!(verify(&signer, &genuine, tenant).as_deref(), Some(w));
        assert!(
            verify(&other, &genuine, tenant).is_none(),
            "wrong secret accepted"
        );
        if session {
            for t in tenants.iter().filter(|t| **t != tenant) {
                assert!(
                    verify(&signer, &genuine, t).is_none(),
                    "{genuine:?} of tenant {tenant:?} accepted for {t:?}"
                );
            }
        }
        // A mutation: flip, truncate, extend, re-target, splice.
        let mut m = genuine.clone().into_bytes();
        match rng.below(5) {
            0 => {
                let i = rng.below(m.len());
                let old = m[i];
                while m[i] == old {
                    m[i] = B64[rng.below(B64.len())];
                }
            }
            1 => m.truncate(rng.below(m.len())),
            2 => m.push(B64[rng.below(B64.len())]),
            3 => {
                let to = workers[rng.below(workers.len())];
                let rest = genuine.split_once('.').map(|x| x.1).unwrap_or_default();
                m = format!("{to}.{rest}").into_bytes();
            }
            _ => {
                let i = rng.below(m.len());
                m.insert(i, B64[rng.below(B64.len())]);
            }
        }
        let m = String::from_utf8(m).expect("ascii");
        if m != genuine {
            tampered += 1;
            let v = verify(&signer, &m, tenant);
            assert!(
                v.is_none(),
                "tampered {m:?} (from {genuine:?}) accepted as {v:?}"
            );
        }
    }
    println!("affinity verify: {n} random strings ({random_pinned} pinned), {tampered} tampered tokens rejected");
    assert_eq!(random_pinned, 0);
}

#[test]
fn fuzz_config_parse() {
    // YAML parsing is ~30x slower per case than the others: half the cases.
    let n = cases(20_000) / 2;
    let mut rng = Rng::new(3);
    let base = include_str!("../../conf/hotplex.yaml");
    let seeds = [
        base,
        include_str!("../../conf/hotplex.default.yaml"),
        "workers:\n  - id: w1\n    address: \"127.0.0.1:1\"\n",
    ];
    const TOKENS: &[&str] = &[
        ":",
        "- ",
        "  ",
        "\n",
        "[",
        "]",
        "{",
        "}",
        "\"",
        "'",
        "&a",
        "*a",
        "!!binary",
        "~",
        "-1",
        "1e309",
        "18446744073709551616",
        "0x10",
        "1h",
        "0ms",
        "999999999999d",
        "null",
        "true",
        "\t",
        "#",
        "|",
        ">",
        "\u{feff}",
        "\u{0}",
        "workers",
        "weight",
        "address",
        "id",
        "routing",
        "key_sources",
        "affinity_secrets",
        "timeouts",
        "listen",
        "\"[::1]:0\"",
        "\"127.0.0.1:99999\"",
    ];
    let (mut ok, mut err) = (0u64, 0u64);
    for _ in 0..n {
        let mut t: Vec<u8> = seeds[rng.below(seeds.len())].as_bytes().to_vec();
        for _ in 0..=rng.below(6) {
            if t.is_empty() {
                break;
            }
            let i = rng.below(t.len());
            match rng.below(5) {
                0 => {
                    let tok = TOKENS[rng.below(TOKENS.len())].as_bytes();
                    t.splice(i..i, tok.iter().copied());
                }
                1 => {
                    let j = (i + rng.below(40)).min(t.len());
                    t.drain(i..j);
                }
                2 => t[i] = rng.next() as u8,
                3 => {
                    let j = (i + rng.below(60)).min(t.len());
                    let dup = t[i..j].to_vec();
                    t.splice(i..i, dup);
                }
                _ => t.truncate(i),
            }
        }
        let text = String::from_utf8_lossy(&t);
        match hotplex_proxy::config::parse("fuzz.yaml", &text) {
            Ok(_) => ok += 1,
            Err(e) => {
                err += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    println!("config parse: {n} mutated files: {ok} valid, {err} rejected with an error");
    assert!(err > 0);
}

/// The raw HTTP/1 head check (`hotplex_proxy::hostile`): never panics, and accepts a head
/// exactly when every CR and LF in it is part of a CRLF pair and it has no NUL (reference
/// model: split on CRLF, no piece may hold CR, LF or NUL). Inputs: random bytes biased to
/// CR/LF/NUL, and real request heads with line ends mutated (CRLF -> LF, CR dropped, bytes
/// inserted next to a line end).
#[test]
fn fuzz_raw_head_check() {
    use hotplex_proxy::hostile::{check_line_endings, HeadAnomaly};
    let n = cases(20_000);
    let mut rng = Rng::new(4);
    let heads: [&[u8]; 3] = [
        b"GET /sessions/a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n",
        b"POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\r\nGET / HTTP/1.0\r\n\r\n",
    ];
    let model = |raw: &[u8]| {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < raw.len() {
            if raw[i..].starts_with(b"\r\n") {
                pieces.push(&raw[start..i]);
                i += 2;
                start = i;
            } else {
                i += 1;
            }
        }
        pieces.push(&raw[start..]);
        pieces
            .iter()
            .all(|p| !p.iter().any(|b| matches!(b, b'\r' | b'\n' | b'\0')))
    };
    let (mut accepted, mut refused) = (0u64, 0u64);
    for k in 0..n {
        let raw: Vec<u8> = if k % 2 == 0 {
            const LINE: &[u8] = b"\r\n\r\n\0 aZ:";
            (0..rng.below(64))
                .map(|_| LINE[rng.below(LINE.len())])
                .collect()
        } else {
            let mut t = heads[rng.below(heads.len())].to_vec();
            for _ in 0..rng.below(3) {
                let ends: Vec<usize> = (0..t.len()).filter(|&i| t[i] == b'\r').collect();
                let Some(&i) = ends.get(rng.below(ends.len())) else {
                    break;
                };
                match rng.below(3) {
                    0 => {
                        t.remove(i);
                    }
                    1 => {
                        let b = rng.bytes(2);
                        t.splice(i..i, b);
                    }
                    _ => t[i] = b"\n\r \0"[rng.below(4)],
                }
            }
            t
        };
        let got = check_line_endings(&raw);
        assert_eq!(
            got.is_ok(),
            model(&raw),
            "{:?}: {got:?}",
            raw.escape_ascii().to_string()
        );
        match got {
            Ok(()) => accepted += 1,
            Err(HeadAnomaly::BareLf { at }) => {
                assert_eq!(raw[at], b'\n');
                assert!(at == 0 || raw[at - 1] != b'\r');
                refused += 1;
            }
            Err(HeadAnomaly::BareCr { at }) => {
                assert_eq!(raw[at], b'\r');
                assert_ne!(raw.get(at + 1), Some(&b'\n'));
                refused += 1;
            }
            Err(HeadAnomaly::Nul { at }) => {
                assert_eq!(raw[at], 0);
                refused += 1;
            }
            Err(HeadAnomaly::MissingHost) => unreachable!("not a line-ending result"),
        }
    }
    println!(
        "raw head check: {n} heads: {accepted} accepted, {refused} refused (model agrees on all)"
    );
    assert!(accepted > 0 && refused > 0);
}
