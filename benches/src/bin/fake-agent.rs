//! `fake-agent`: a fast, small agent for the workload benchmark (`benches/workload.sh`).
//! It speaks the worker's `hotplex-jsonl` protocol on stdin/stdout like the demo agent,
//! but each turn streams `--events` `answer` lines, one every `--interval-ms`, then one
//! `result`: an SSE response of `--events + 1` events over a few seconds, like a model
//! streaming its answer. Each answer's text starts with `t=<unix ns>` (when it was written),
//! so the load driver measures the delivery latency of every event; `--bytes` pads it.
//! std only (no async runtime): 2,000 sessions are 2,000 of these processes.

use std::io::{BufRead, Write};
use std::time::Duration;

use hotplex_bench::unix_nanos;

struct Opts {
    events: u32,
    interval: Duration,
    bytes: usize,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        events: 48,
        interval: Duration::from_millis(50),
        bytes: 120,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        let n: u64 = v.parse().map_err(|_| format!("{a}: not a number: {v}"))?;
        match a.as_str() {
            "--events" => o.events = u32::try_from(n).map_err(|_| "--events too large")?,
            "--interval-ms" => o.interval = Duration::from_millis(n),
            "--bytes" => o.bytes = usize::try_from(n).map_err(|_| "--bytes too large")?,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    Ok(o)
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fake-agent: {e} (options: --events N --interval-ms MS --bytes B)");
            std::process::exit(2);
        }
    };
    let pad = "x".repeat(o.bytes);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    if writeln!(out, r#"{{"type":"ready","agent":"fake-agent"}}"#)
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(1);
    }
    let mut turn: u64 = 0;
    for line in stdin.lock().lines() {
        let Ok(line) = line else {
            std::process::exit(1)
        };
        // The worker's prompt line: {"type":"user","session_id":...,"prompt":...}.
        if !line.contains(r#""type":"user""#) {
            continue;
        }
        turn += 1;
        let mut ok = true;
        for i in 0..o.events {
            if i > 0 {
                std::thread::sleep(o.interval);
            }
            let r = writeln!(
                out,
                r#"{{"type":"answer","text":"t={} turn {turn} part {i} {pad}"}}"#,
                unix_nanos()
            )
            .and_then(|_| out.flush());
            if r.is_err() {
                ok = false;
                break;
            }
        }
        let r = writeln!(
            out,
            r#"{{"type":"result","turn":{turn},"stop_reason":"end_turn","text":"t={}"}}"#,
            unix_nanos()
        )
        .and_then(|_| out.flush());
        if !ok || r.is_err() {
            std::process::exit(1);
        }
    }
}
