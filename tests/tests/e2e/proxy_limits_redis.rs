//! Proxy e2e: the shared rate-limit store on a real `redis-server` (started here on a free
//! loopback port, see `support::redis`).
//!
//! - Two proxy processes share one Redis: the limit holds across both (±5%). Redis down:
//!   the fail-open proxy admits, the fail-closed one answers 503, both report
//!   `hotplex_proxy_ratelimit_store_up 0`; Redis back: both recover.
//! - Slow replies (`DEBUG SLEEP` while checks with a 100 ms timeout run under load): every
//!   decision, during and after, belongs to its own bucket; the late replies are dropped.

use hotplex_common::names;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::proxy::*;
use crate::support::redis::*;
use hotplex_e2e::{eventually, free_addr, metric_value};

async fn gauge(c: &reqwest::Client, p: &impl Admin, name: &str, labels: &[&str]) -> f64 {
    metric_value(&metrics(c, p).await, name, labels).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_limit_across_two_proxies_and_fail_open_closed() {
    if skip_without_redis() {
        return;
    }
    const RATE: f64 = 20.0;
    const BURST: u32 = 10;
    let redis_addr = free_addr();
    let mut redis = start_redis(redis_addr.port(), &[]).await;
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let yaml = |fail: &str| {
        proxy_yaml(
            &worker_list(&workers),
            &format!(
                "{PATIENT_WORKER_CHECKS}limits:\n  per_ip: {{rate: {RATE}, burst: {BURST}}}\n  store:\n    redis: \"{redis_addr}\"\n    fail: {fail}\n    timeout: 200ms\n"
            ),
        )
    };
    let a = spawn_proxy(&yaml("open")).await;
    let b = spawn_proxy(&yaml("closed")).await;
    let c = client();
    // A declared route, forwarded when admitted (the worker answers 404 for the unknown
    // session); the proxy's own /health/live is not limited.
    let urls = [
        format!("{}/sessions/limit-probe", a.base()),
        format!("{}/sessions/limit-probe", b.base()),
    ];

    // 2x the limit in total (1x per proxy) for 4 s.
    let offered_rate = 2.0 * RATE;
    let n = (offered_rate * 4.0) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / offered_rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        tick.tick().await;
        let (c, url) = (c.clone(), urls[i % 2].clone());
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.expect("request").status().as_u16()
        }));
    }
    let secs = start.elapsed().as_secs_f64();
    let mut admitted = [0usize; 2];
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.expect("task") {
            404 => admitted[i % 2] += 1,
            429 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    let total = admitted[0] + admitted[1];
    let expected = RATE * secs + f64::from(BURST);
    let err = (total as f64 - expected) / expected;
    eprintln!(
        "shared limit: offered {n} in {secs:.2}s over 2 proxies, admitted {total} ({} + {}), expected {expected:.1}, error {:+.2}%",
        admitted[0],
        admitted[1],
        err * 100.0
    );
    assert!(err.abs() <= 0.05, "admitted {total} vs {expected:.1}");
    assert!(admitted[0] > 0 && admitted[1] > 0);
    for p in [&a, &b] {
        assert_eq!(
            gauge(&c, p, names::proxy::RATELIMIT_STORE_UP, &[]).await,
            1.0
        );
    }

    // Redis down: A fails open, B fails closed.
    redis.kill();
    // allow-sleep: the proxies' store connections see the reset; the test is about the steady Redis-down state
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = send(c.get(&urls[0])).await;
    assert_eq!(r.status, 404, "fail open (forwarded): {r:?}");
    let r = send(c.get(&urls[1])).await;
    assert_eq!(r.status, 503, "fail closed: {r:?}");
    assert_eq!(r.body["error"], "rate_limit_unavailable");
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    for p in [&a, &b] {
        assert_eq!(
            gauge(&c, p, names::proxy::RATELIMIT_STORE_UP, &[]).await,
            0.0
        );
    }
    assert!(
        gauge(
            &c,
            &a,
            names::proxy::RATELIMIT_STORE_FAILURES,
            &["outcome=\"fail_open\""]
        )
        .await
            >= 1.0
    );
    assert!(
        gauge(
            &c,
            &b,
            names::proxy::RATELIMIT_STORE_FAILURES,
            &["outcome=\"fail_closed\""]
        )
        .await
            >= 1.0
    );

    // Redis back: both recover (after the 1 s back-off).
    let _redis = start_redis(redis_addr.port(), &[]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let r = send(c.get(&urls[1])).await;
        if r.status == 404 && r.node.is_some() {
            break; // admitted and forwarded again
        }
        assert!(Instant::now() < deadline, "never recovered: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        gauge(&c, &b, names::proxy::RATELIMIT_STORE_UP, &[]).await,
        1.0
    );
}

/// Route `session` (`GET /sessions/{id}`) and route `messages`
/// (`POST /sessions/{id}/messages`), each a bucket per client IP (`X-Forwarded-For` from
/// the trusted loopback peer), with very different bursts.
const A_BURST: u32 = 100;
const B_BURST: u32 = 5000;

fn route_a(c: &reqwest::Client, base: &str, ip: &str) -> reqwest::RequestBuilder {
    c.get(format!("{base}/sessions/probe-a"))
        .header("x-forwarded-for", ip)
}

fn route_b(c: &reqwest::Client, base: &str, ip: &str) -> reqwest::RequestBuilder {
    c.post(format!("{base}/sessions/probe-b/messages"))
        .header("x-forwarded-for", ip)
        .header("content-type", "application/json")
        .body(r#"{"prompt":"hi"}"#)
}

/// Redis stalls three times for 300 ms (`DEBUG SLEEP 0.3` from a side connection) while 6
/// clients with fresh buckets (one new IP per request) and one tracked client (its own two
/// buckets, A burst 100 and B burst 5000, no refill) send through a fail-closed proxy whose
/// store timeout is 100 ms. Every admitted answer must carry its own bucket's remaining
/// count: a fresh bucket `burst - 1`, the tracked ones one less each time; after the slow
/// period the tracked bucket A runs out exactly at 0 while B keeps admitting. Commands
/// Redis ran whose reply came too late are counted (`INFO commandstats` minus the
/// decisions clients saw): they were dropped, never given to another check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_replies_never_shift_decisions() {
    if skip_without_redis() {
        return;
    }
    let redis_addr = free_addr();
    let _redis = start_redis(redis_addr.port(), &["--enable-debug-command", "local"]).await;
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = proxy_yaml(
        &worker_list(&workers),
        &format!(
            "{PATIENT_WORKER_CHECKS}limits:\n  trusted_proxies: [\"127.0.0.1/32\"]\n  routes:\n    session: {{rate: 0.0001, burst: {A_BURST}}}\n    messages: {{rate: 0.0001, burst: {B_BURST}}}\n  store:\n    redis: \"{redis_addr}\"\n    fail: closed\n    timeout: 100ms\n"
        ),
    );
    let p = spawn_logged_proxy(
        dir.path(),
        &yaml,
        &[("RUST_LOG", "warn,hotplex_proxy::security=info")],
    )
    .await;
    let c = client();
    let base = p.base();
    let mut side_conn = side(&format!("redis://{redis_addr}/")).await;

    // Background: fresh buckets, so an admitted answer must say burst - 1.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU32::new(0)); // decisions with a reply (admitted or 429)
    let mut load = Vec::new();
    for t in 0..6u32 {
        let (c, base, stop, seen) = (c.clone(), base.clone(), stop.clone(), seen.clone());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let ip = format!("10.{t}.{}.{}", i / 250, i % 250);
                let (h, burst) = if i.is_multiple_of(2) {
                    (hit(route_a(&c, &base, &ip)).await, A_BURST)
                } else {
                    (hit(route_b(&c, &base, &ip)).await, B_BURST)
                };
                match h.status {
                    // Admitted, then the worker was out (a loaded CI machine): no decision.
                    503 if h.error == "worker_unavailable" => {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    503 => {
                        assert_eq!(h.error, "rate_limit_unavailable", "{h:?}");
                        failed += 1;
                    }
                    _ => {
                        assert!(admitted(&h), "fresh bucket {ip}: {h:?}");
                        assert_eq!(h.remaining, Some(burst - 1), "fresh bucket {ip}: {h:?}");
                        seen.fetch_add(1, Ordering::Relaxed);
                        ok += 1;
                    }
                }
            }
            (ok, failed)
        }));
    }

    // The tracked client, throughout: before, during and after the slow periods.
    let tracked = "198.51.100.7";
    let mut a = Bucket::new("tracked A", A_BURST);
    let mut b = Bucket::new("tracked B", B_BURST);
    // Times of the tracked client's store failures, for the length of each 503 window.
    let mut fails: Vec<Instant> = Vec::new();
    let mut step = |ha: &Hit, hb: &Hit, a: &mut Bucket, b: &mut Bucket| {
        a.observe(ha);
        b.observe(hb);
        // A reply from Redis: a decision, or admitted and then the worker was out.
        let replied = |h: &Hit| u32::from(h.status != 503 || h.error == "worker_unavailable");
        seen.fetch_add(replied(ha) + replied(hb), Ordering::Relaxed);
        if ha.status == 503 || hb.status == 503 {
            fails.push(Instant::now());
        }
    };
    let phase_end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < phase_end {
        let ha = hit(route_a(&c, &base, tracked)).await;
        let hb = hit(route_b(&c, &base, tracked)).await;
        step(&ha, &hb, &mut a, &mut b);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sleeper = {
        let mut conn = side(&format!("redis://{redis_addr}/")).await;
        tokio::spawn(async move {
            for _ in 0..3 {
                let _: () = redis::cmd("DEBUG")
                    .arg("SLEEP")
                    .arg("0.3")
                    .query_async(&mut conn)
                    .await
                    .expect("DEBUG SLEEP");
                // allow-sleep: the gap between two stalls of Redis is the scenario itself
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
        })
    };
    while !sleeper.is_finished() {
        let ha = hit(route_a(&c, &base, tracked)).await;
        let hb = hit(route_b(&c, &base, tracked)).await;
        step(&ha, &hb, &mut a, &mut b);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sleeper.await.expect("sleeper");
    let (a_during, failed_during) = (a.admitted, a.failed + b.failed);

    // After: A runs out exactly, B keeps admitting, with the background load still on.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = 0;
    while !(a.exhausted && a.refused >= 5) {
        assert!(Instant::now() < deadline, "A never ran out: {a:?}");
        let ha = hit(route_a(&c, &base, tracked)).await;
        let hb = hit(route_b(&c, &base, tracked)).await;
        step(&ha, &hb, &mut a, &mut b);
        after += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut bg_ok, mut bg_failed) = (0, 0);
    for t in load {
        let (ok, failed) = t.await.expect("load task");
        bg_ok += ok;
        bg_failed += failed;
    }
    assert!(!b.exhausted, "B never runs out here: {b:?}");
    assert!(
        a.admitted > a_during,
        "A admitted after the slow period: {a:?}"
    );
    assert!(
        failed_during + bg_failed > 0,
        "the slow periods were never noticed (no 503)"
    );

    // Every command Redis completed but no client saw was a reply dropped after its
    // check's timeout.
    let ran = completed_calls(&mut side_conn, "evalsha").await;
    let seen = u64::from(seen.load(Ordering::Relaxed));
    assert!(ran >= seen, "Redis ran {ran}, clients saw {seen}");
    let dropped = ran - seen;
    eprintln!(
        "slow replies: tracked A {} admitted ({a_during} before the end of the slow periods) + {} refused at 0, B {} admitted, {} + {} store failures (503), {} + {} admitted but worker out; background {bg_ok} admitted with a fresh bucket, {bg_failed} store failures; Redis ran {ran} scripts, {dropped} replies came after their check's timeout and were dropped; {after} rounds after",
        a.admitted, a.refused, b.admitted, a.failed, b.failed, a.unavailable, b.unavailable
    );
    assert!(
        dropped > 0,
        "no late reply: the test did not stall Redis under load"
    );
    // 503 windows: failures less than 400 ms apart belong to one window.
    let mut windows: Vec<(Instant, Instant)> = Vec::new();
    for t in fails {
        match windows.last_mut() {
            Some(w) if t.duration_since(w.1) < Duration::from_millis(400) => w.1 = t,
            _ => windows.push((t, t)),
        }
    }
    let spans: Vec<String> = windows
        .iter()
        .map(|(s, e)| format!("{:.2}s", e.duration_since(*s).as_secs_f64()))
        .collect();
    eprintln!("slow replies: the tracked client's 503 windows (first to last 503): {spans:?}");

    // The decisions came from Redis: the tracked buckets are there.
    let tat: Option<String> = redis::cmd("GET")
        .arg(format!("hotplex:rl:route|session|ip:{tracked}"))
        .query_async(&mut side_conn)
        .await
        .expect("GET");
    assert!(
        tat.is_some_and(|v| v.parse::<f64>().is_ok()),
        "bucket A not in Redis"
    );

    // Gauge and log: down once noticed, up again only after a real reply.
    assert!(
        eventually(WAIT, || async {
            gauge(&c, &p, names::proxy::RATELIMIT_STORE_UP, &[]).await == 1.0
        })
        .await
    );
    assert!(
        gauge(
            &c,
            &p,
            names::proxy::RATELIMIT_STORE_FAILURES,
            &["outcome=\"fail_closed\""]
        )
        .await
            >= 1.0
    );
    let log = p.log();
    let down = log
        .find("rate-limit store unreachable: failing closed")
        .expect("WARN line on the first failure");
    let up = log
        .rfind("rate-limit store is reachable again")
        .expect("INFO line on recovery");
    assert!(up > down, "recovery logged after the failure");
}

/// What a load client saw: (send time, status, whether a store decision came with it).
type Seen = Vec<(Instant, u16, bool)>;

/// Load on the `session` route of `base` from fresh client IPs (`10.<t>.x.y`, one per
/// request) until `stop`: a fresh bucket admits (404) or the store failed.
fn fresh_load(
    c: &reqwest::Client,
    base: &str,
    t: u32,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Seen> {
    let (c, base, stop) = (c.clone(), base.to_string(), stop.clone());
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let ip = format!("10.{t}.{}.{}", i / 250, i % 250);
            let at = Instant::now();
            let h = hit(route_a(&c, &base, &ip)).await;
            if admitted(&h) && h.remaining.is_some() {
                assert_eq!(
                    h.remaining,
                    Some(RESTART_BURST - 1),
                    "fresh bucket {ip}: {h:?}"
                );
            }
            seen.push((at, h.status, h.remaining.is_some()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen
    })
}

const RESTART_BURST: u32 = 10;

/// Redis is killed and started again (same port, empty: no persistence) while a fail-open
/// and a fail-closed proxy carry steady load from fresh client IPs. Every request is
/// answered: the open proxy admits all of them, the closed one answers 503
/// `rate_limit_unavailable` for every request sent while Redis is down; both report the
/// store up again after the restart, and then one bucket shared by both proxies admits
/// exactly its burst (remaining 9..0 across the two), then 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_under_load() {
    if skip_without_redis() {
        return;
    }
    let redis_addr = free_addr();
    let mut redis = start_redis(redis_addr.port(), &[]).await;
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let yaml = |fail: &str| {
        proxy_yaml(
            &worker_list(&workers),
            &format!(
                "{PATIENT_WORKER_CHECKS}limits:\n  trusted_proxies: [\"127.0.0.1/32\"]\n  routes:\n    session: {{rate: 0.0001, burst: {RESTART_BURST}}}\n  store:\n    redis: \"{redis_addr}\"\n    fail: {fail}\n    timeout: 300ms\n"
            ),
        )
    };
    let open = spawn_proxy(&yaml("open")).await;
    let closed = spawn_proxy(&yaml("closed")).await;
    let c = client();
    wait_store_answers(&c, &open.base()).await;
    wait_store_answers(&c, &closed.base()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let open_load: Vec<_> = (0..3)
        .map(|t| fresh_load(&c, &open.base(), t, &stop))
        .collect();
    let closed_load: Vec<_> = (3..6)
        .map(|t| fresh_load(&c, &closed.base(), t, &stop))
        .collect();
    // allow-sleep: steady load before the kill (the scenario's timeline)
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let killed = Instant::now();
    redis.kill();
    // allow-sleep: Redis stays down under load for 1.5 s (the scenario's timeline)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarted = Instant::now();
    let _redis = start_redis(redis_addr.port(), &[]).await;
    let listening = restarted.elapsed();
    let mut recovered = Vec::new();
    for p in [&open, &closed] {
        assert!(
            eventually(WAIT, || async {
                gauge(&c, p, names::proxy::RATELIMIT_STORE_UP, &[]).await == 1.0
            })
            .await,
            "store never up again"
        );
        recovered.push(restarted.elapsed());
    }
    // allow-sleep: steady load after the recovery (the scenario's timeline)
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut open_seen = Seen::new();
    for t in open_load {
        open_seen.extend(t.await.expect("load"));
    }
    let mut closed_seen = Seen::new();
    for t in closed_load {
        closed_seen.extend(t.await.expect("load"));
    }
    // Fail open: everything admitted, decided by Redis whenever it answered.
    assert!(
        open_seen.iter().all(|&(_, s, _)| s == 404),
        "fail open answered {:?}",
        open_seen.iter().find(|&&(_, s, _)| s != 404)
    );
    let down = |at: Instant| at >= killed && at < restarted;
    let open_down = open_seen.iter().filter(|&&(at, _, _)| down(at)).count();
    let open_decided_down = open_seen
        .iter()
        .filter(|&&(at, _, d)| down(at) && d)
        .count();
    assert!(open_down > 0);
    assert_eq!(open_decided_down, 0, "a decision from a dead Redis");
    // Fail closed: admitted with a decision, or 503; 503 for everything sent while down.
    for &(at, s, d) in &closed_seen {
        assert!(s == 503 || (s == 404 && d), "fail closed answered {s}");
        if down(at) {
            assert_eq!(s, 503, "admitted while Redis was down");
        }
    }
    let closed_down = closed_seen.iter().filter(|&&(at, _, _)| down(at)).count();
    let after = |v: &Seen| {
        v.iter()
            .filter(|&&(at, s, d)| at >= restarted && s == 404 && d)
            .count()
    };
    assert!(after(&open_seen) > 0 && after(&closed_seen) > 0);
    let failed = |v: &Seen| {
        v.iter()
            .filter(|&&(_, s, d)| s == 404 && !d || s == 503)
            .count()
    };
    let failed_before = |v: &Seen| {
        v.iter()
            .filter(|&&(at, s, d)| at < killed && (s == 404 && !d || s == 503))
            .count()
    };
    let before = |v: &Seen| v.iter().filter(|&&(at, _, _)| at < killed).count();
    eprintln!(
        "redis restart under load, before the kill: fail-open proxy {} requests, {} without a store decision; fail-closed {} requests, {} store failures",
        before(&open_seen),
        failed_before(&open_seen),
        before(&closed_seen),
        failed_before(&closed_seen)
    );
    eprintln!(
        "redis restart under load: {} requests to the fail-open proxy ({open_down} while Redis was down, all admitted; {} without a store decision), {} to the fail-closed one ({closed_down} while down, all 503; {} store failures in all); redis listening {listening:?} after the restart, store up again on the proxies {:?} after it; then {} + {} store-decided admissions",
        open_seen.len(),
        failed(&open_seen),
        closed_seen.len(),
        failed(&closed_seen),
        recovered,
        after(&open_seen),
        after(&closed_seen),
    );

    // Limits hold again, across both proxies: one bucket, exactly its burst.
    let tracked = "198.51.100.9";
    let mut b = Bucket::new("shared after restart", RESTART_BURST).with_fail_open();
    for i in 0..(RESTART_BURST + 6) {
        let base = if i.is_multiple_of(2) {
            open.base()
        } else {
            closed.base()
        };
        b.observe(&hit(route_a(&c, &base, tracked)).await);
    }
    assert!(b.exhausted && b.refused >= 5, "{b:?}");
    if b.failed + b.failed_open == 0 {
        // No store failure in the sequence: exactly the burst, remaining 9..0.
        assert_eq!((b.admitted, b.last), (RESTART_BURST, 0), "{b:?}");
    }
}
