//! Stable-toolchain fuzzing of the worker's parsers of untrusted input: WebSocket client
//! frames (`ClientFrame`, JSON), agent stdout lines (`agent::parse_line`) and session ids.
//! Seeded random + mutated inputs, bounded; asserts no panic and the invariants. Longer:
//! `HOTPLEX_FUZZ_CASES=2000000 HOTPLEX_FUZZ_SEED=$RANDOM cargo test --release -p hotplex-worker --test fuzz_frames`.

use hotplex_common::SessionId;
use hotplex_worker::agent::parse_line;
use hotplex_worker::ws::ClientFrame;

fn cases() -> u64 {
    std::env::var("HOTPLEX_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Rng {
        let seed: u64 = std::env::var("HOTPLEX_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5eed);
        println!("fuzz seed {seed}");
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
}

const SEEDS: &[&str] = &[
    r#"{"type":"execute","request_id":1,"session_id":"s1","prompt":"hello"}"#,
    r#"{"type":"stats","request_id":18446744073709551615}"#,
    r#"{"type":"stop","session_id":"abc","request_id":2}"#,
    r#"{"type":"version"}"#,
    r#"{"type":"answer","text":"é😀\u0000","n":[1,2,{"a":null}]}"#,
];
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "-1",
    "1e400",
    "18446744073709551616",
    "\"type\"",
    "\"request_id\"",
    "é",
    "😀",
    "\u{0}",
    " ",
];

/// A mutated seed (valid UTF-8: frames arrive as WebSocket text).
fn mutate(rng: &mut Rng) -> String {
    let mut s: Vec<char> = SEEDS[rng.below(SEEDS.len())].chars().collect();
    for _ in 0..=rng.below(5) {
        let i = rng.below(s.len() + 1).min(s.len());
        match rng.below(4) {
            0 => {
                let t: Vec<char> = TOKENS[rng.below(TOKENS.len())].chars().collect();
                s.splice(i..i, t);
            }
            1 => {
                let j = (i + rng.below(10)).min(s.len());
                s.drain(i..j);
            }
            2 => {
                if i < s.len() {
                    s[i] = char::from_u32(rng.next() as u32 % 0x11000).unwrap_or('x');
                }
            }
            _ => s.truncate(i),
        }
    }
    s.into_iter().collect()
}

#[test]
fn fuzz_client_frames_and_agent_lines() {
    let n = cases();
    let mut rng = Rng::new(11);
    let (mut frames_ok, mut lines_ok) = (0u64, 0u64);
    for _ in 0..n {
        let text = mutate(&mut rng);
        if let Ok(f) = serde_json::from_str::<ClientFrame>(&text) {
            frames_ok += 1;
            // Session ids in frames go through the same validation as HTTP ones.
            if let Some(id) = f.session_id.as_deref() {
                if let Ok(s) = SessionId::parse(id) {
                    assert_eq!(s.as_str(), id);
                }
            }
        }
        match parse_line(&text) {
            Ok(l) => {
                lines_ok += 1;
                assert!(!l.fields.contains_key("type"), "type is taken out");
            }
            Err(e) => {
                // The error quotes at most ~120 bytes of the line, cut on a char boundary.
                assert!(e.to_string().len() < 400, "{e}");
            }
        }
    }
    // Over-long lines are rejected without parsing.
    let long = format!(
        "{{\"type\":\"x\",\"p\":\"{}\"}}",
        "é".repeat(3 * 1024 * 1024)
    );
    assert!(parse_line(&long).is_err());
    println!("frames: {n} mutated: {frames_ok} parsed as ClientFrame, {lines_ok} as agent lines");
    assert!(frames_ok > 0 && lines_ok > 0);
}

#[test]
fn fuzz_session_ids() {
    let n = cases();
    let mut rng = Rng::new(12);
    let mut valid = 0u64;
    for _ in 0..n {
        let len = rng.below(140);
        let raw: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(3) == 0 {
                    rng.next() as u8
                } else {
                    b"aZ09._~-"[rng.below(8)]
                }
            })
            .collect();
        if let Ok(id) = SessionId::parse_bytes(&raw) {
            valid += 1;
            assert!((1..=128).contains(&id.as_str().len()));
            assert_eq!(id.as_str().as_bytes(), raw.as_slice());
            assert!(id
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)));
        }
    }
    println!("session ids: {n} random: {valid} valid");
    assert!(valid > 0);
}
