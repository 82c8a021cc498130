//! Reliability: a plain proxy restart under load (SIGTERM, graceful stop; then a new
//! process on the same ports), as opposed to the socket hand-over of `proxy_upgrade.rs`.
//!
//! On SIGTERM pingora stops accepting at once (the listening socket is closed: new
//! connections are refused, which a client can retry), keeps serving what it accepted for
//! `upgrade.grace_period`, then gives its runtimes `upgrade.shutdown_timeout` to finish and
//! exits; the proxy answers with `Connection: close` from SIGTERM on (`crate::upgrade`).
//! Proven here with clients that open one connection per request and classify every
//! attempt: complete answer, refused connect, connection closed before any response byte,
//! or truncated / wrong answer (never allowed). Every request whose head the proxy had read
//! is answered completely; a connection whose request head had not arrived when the
//! shutdown fired is closed without a byte (pingora; only at the SIGTERM instant), which
//! the client retries like a refused connect.

use crate::support::fake_upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::proxy::*;
use fake_upstream::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one attempt got.
#[derive(Debug, Clone, PartialEq)]
enum Attempt {
    /// 200 with the complete body, echoing this request's target.
    Ok,
    /// `connect` refused or reset: nothing listens, no request byte sent (the client may retry).
    Refused,
    /// Connected, but the connection closed before any response byte.
    NoResponse,
    /// Some bytes, but not a complete, matching answer.
    Truncated(String),
    /// No answer within the read deadline.
    Hung,
}

/// One `GET target` with `Connection: close` on a new connection.
async fn attempt(addr: SocketAddr, target: &str) -> Attempt {
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        // Refused, or reset during the handshake (a SYN queued on the listening socket as
        // it closed): no byte of the request was sent, the client retries.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Attempt::Refused
        }
        Err(e) => return Attempt::Truncated(format!("connect: {e}")),
    };
    let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return Attempt::NoResponse;
    }
    let mut out = Vec::new();
    let mut tmp = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Err(_) => return Attempt::Hung,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&tmp[..n]),
        }
    }
    if out.is_empty() {
        return Attempt::NoResponse;
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Attempt::Truncated(format!("no end of head: {text:?}"));
    };
    let cl: Option<usize> = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    });
    if !head.starts_with("HTTP/1.1 200 ") || cl != Some(body.len()) {
        return Attempt::Truncated(format!("{text:?}"));
    }
    if !body.contains(&format!("\"target\":\"{target}\"")) {
        return Attempt::Truncated(format!("someone else's answer: {text:?}"));
    }
    Attempt::Ok
}

/// Per request: when it was first sent and when it completed (since the test start).
#[derive(Debug, Clone, Copy)]
struct Done {
    sent: Duration,
    done: Duration,
}

#[derive(Default)]
struct Tally {
    done: Vec<Done>,
    refused: u64,
    no_response: Vec<Duration>,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_under_load_loses_no_answered_request_and_truncates_none() {
    // w1 answers in 300 ms (its clients always have a request in flight); w2 at once (its
    // clients open new connections as fast as they can, so some connect right at SIGTERM).
    let slow = fake_upstream::start(Mode::Slow(Duration::from_millis(300))).await;
    let fast = fake_upstream::start(Mode::Echo).await;
    let workers = [("w1", slow.addr), ("w2", fast.addr)];
    let extra = "upgrade:\n  grace_period: 2s\n  shutdown_timeout: 2s\n";
    let yaml = proxy_yaml(&workers, extra);
    let mut a = spawn_proxy(&yaml).await;
    let (listen, admin) = (a.listen, a.admin);
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    const CLIENTS: usize = 16;
    const FAST_CLIENTS: usize = 4;
    let mut tasks = Vec::new();
    for k in 0..CLIENTS + FAST_CLIENTS {
        let (stop, tally) = (stop.clone(), tally.clone());
        // Session keys are hashed to a worker (rendezvous): pick keys that land on w1 for
        // the slow clients, on w2 for the fast ones.
        let want = if k < CLIENTS { 0 } else { 1 };
        let key_for = move |n: u64| {
            (0u64..)
                .map(|salt| format!("r{k}-{n}-{salt}"))
                .find(|key| {
                    hotplex_proxy::routing::hrw::pick(
                        workers.iter().map(|(id, _)| (*id, 1u32)),
                        key.as_bytes(),
                    ) == Some(want)
                })
                .unwrap_or_default()
        };
        tasks.push(tokio::spawn(async move {
            // Staggered starts: connects are spread evenly over time, so some land right
            // around SIGTERM.
            // allow-sleep: staggered client starts (at most 300 ms), spread around SIGTERM
            tokio::time::sleep(Duration::from_millis(k as u64 * 300 / CLIENTS as u64)).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let target = format!("/sessions/{}", key_for(n));
                let sent = t0.elapsed();
                let give_up = Instant::now() + Duration::from_secs(30);
                loop {
                    let r = attempt(listen, &target).await;
                    let finished = {
                        let mut t = tally.lock().expect("tally");
                        match r {
                            Attempt::Ok => {
                                t.done.push(Done {
                                    sent,
                                    done: t0.elapsed(),
                                });
                                true
                            }
                            // Retry: a refused connect, or a connection closed before any
                            // byte of response (RFC 9110 9.2.2: safe for an idempotent GET).
                            Attempt::Refused => {
                                t.refused += 1;
                                false
                            }
                            Attempt::NoResponse => {
                                t.no_response.push(t0.elapsed());
                                false
                            }
                            other => {
                                t.failures
                                    .push(format!("{target} at {:?}: {other:?}", t0.elapsed()));
                                true
                            }
                        }
                    };
                    if finished {
                        break;
                    }
                    if Instant::now() > give_up {
                        let mut t = tally.lock().expect("tally");
                        t.failures.push(format!("{target}: never answered"));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        }));
    }
    // allow-sleep: load runs on A before SIGTERM (a measurement window)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let term_at = t0.elapsed();
    a.guard.signal(nix::sys::signal::Signal::SIGTERM);
    // The listening socket closes at once: connects are refused soon after SIGTERM.
    let refused_after = {
        let start = Instant::now();
        loop {
            match TcpStream::connect(listen).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    break Some(start.elapsed())
                }
                _ if start.elapsed() > Duration::from_secs(5) => break None,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    let exited = tokio::task::block_in_place(|| a.guard.wait_timeout(Duration::from_secs(20)));
    let a_exit = t0.elapsed() - term_at;
    assert!(exited.is_some(), "A exits after its grace period");
    // B: a new process on the same ports.
    let b = spawn_proxy_at(&yaml, Some((listen, admin))).await;
    let b_up = t0.elapsed() - term_at;
    // allow-sleep: load runs on B (a measurement window)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    let t = tally.lock().expect("tally");
    let before = t.done.iter().filter(|d| d.done < term_at).count();
    let fast_total = fast.seen().len();
    let across = t
        .done
        .iter()
        .filter(|d| d.sent < term_at && d.done >= term_at && d.done < term_at + a_exit)
        .count();
    let no_response_after: Vec<Duration> = t
        .no_response
        .iter()
        .map(|d| d.saturating_sub(term_at))
        .collect();
    let on_b = t.done.iter().filter(|d| d.done >= b_up + term_at).count();
    println!(
        "restart: {before} ok before SIGTERM ({fast_total} on the fast worker in all); \
         {across} in flight at SIGTERM completed by A; \
         listener refused connects {refused_after:?} after SIGTERM; A exited {a_exit:?} after SIGTERM; \
         B accepting {b_up:?} after SIGTERM; {} refused connects retried; {} connections closed \
         before any response byte (at {:?} after SIGTERM), all retried ok; {on_b} ok on B; \
         {} failures: {:#?}",
        t.refused,
        t.no_response.len(),
        no_response_after,
        t.failures.len(),
        t.failures
    );
    assert!(t.failures.is_empty(), "truncated, wrong or hung answers");
    assert!(
        refused_after.is_some_and(|d| d < Duration::from_secs(2)),
        "the listener closes on SIGTERM"
    );
    assert!(
        across >= CLIENTS / 2,
        "requests in flight at SIGTERM complete: {across}"
    );
    assert!(
        t.refused > 0,
        "clients saw refused connects while no process listened"
    );
    assert!(on_b > 10, "B serves after the restart: {on_b}");
    // pingora closes, without reading it, any connection whose request head has not
    // arrived when its shutdown fires (`handle_new_request`: a biased select of the head
    // read against the shutdown notice; idle keep-alive connections and connections
    // accepted in the same instant alike). Such a client got no byte and retries (above).
    // Bounded: only at the SIGTERM instant, at most one per client.
    assert!(
        no_response_after
            .iter()
            .all(|d| *d < Duration::from_millis(500)),
        "connections closed without an answer other than at the SIGTERM instant: {no_response_after:?}"
    );
    assert!(
        t.no_response.len() <= CLIENTS + FAST_CLIENTS,
        "{:?}",
        t.no_response
    );
    drop(b);
}
