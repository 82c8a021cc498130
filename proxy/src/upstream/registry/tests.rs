//! Unit tests of the worker registry (`super`).

use super::*;

pub(in crate::upstream) fn worker(cap: u64) -> Worker {
    Worker::new(
        WorkerSpec {
            id: "w1".into(),
            address: "127.0.0.1:1".parse().expect("addr"),
            weight: 1,
            capacity: cap,
            drain: false,
        },
        WorkerState {
            healthy: true,
            ..Default::default()
        },
    )
}

fn report(n: u64) -> ReadyReport {
    ReadyReport {
        sessions_active: n,
        max_sessions: Some(2),
        draining: false,
        full: n >= 2,
    }
}

#[test]
fn a_probe_in_flight_keeps_the_changes_made_meanwhile() {
    let w = worker(2);
    let now = Instant::now();
    assert!(w.try_reserve(now));
    assert!(w.try_reserve(now));
    w.settle_create(true);
    w.settle_create(true);
    w.observe_ready(report(2));
    assert!(!w.try_reserve(now), "full");
    // A probe is sent; a session is deleted while it is in flight; the probe's count
    // (taken before the delete) says full: the freed slot stays free.
    let mark = w.probe_mark();
    w.begin_delete();
    w.settle_delete(true);
    w.observe_ready_since(report(2), mark);
    assert!(w.try_reserve(now), "the deleted session's slot");
    assert!(!w.try_reserve(now));
    w.settle_create(true);
    // The next probe (sent with nothing in flight) is the truth again.
    let mark = w.probe_mark();
    w.observe_ready_since(report(1), mark);
    assert!(w.try_reserve(now));
    assert!(!w.try_reserve(now));
}

/// The CI failure of `all_full_gives_503_no_capacity`: a create sent after the mark
/// that the worker counted before answering the probe, then a delete, must not leave
/// the worker looking full while it has a free slot.
#[test]
fn a_create_the_probe_already_counted_is_not_counted_twice() {
    let w = worker(2);
    let now = Instant::now();
    assert!(w.try_reserve(now));
    w.settle_create(true);
    w.observe_ready(report(1));
    let mark = w.probe_mark();
    assert!(w.try_reserve(now));
    // The worker inserts the session, answers the probe (2, full), then the create.
    w.settle_create(true);
    w.begin_delete();
    w.settle_delete(true);
    w.observe_ready_since(report(2), mark);
    assert!(w.try_reserve(now), "one session left of two: room for one");
    assert!(!w.try_reserve(now));
}

#[test]
fn steady_churn_still_learns_the_workers_count() {
    let w = worker(4);
    let now = Instant::now();
    assert!(w.try_reserve(now));
    // A create in flight for every probe: the first ones are ambiguous and ignored.
    for _ in 0..MAX_AMBIGUOUS_PROBES {
        let mark = w.probe_mark();
        w.observe_ready_since(report(3), mark);
        assert_eq!(Worker::sessions_of(&w.snapshot()), 1);
    }
    // Then the count (sessions placed elsewhere) is taken all the same.
    let mark = w.probe_mark();
    w.observe_ready_since(report(3), mark);
    assert_eq!(Worker::sessions_of(&w.snapshot()), 3);
    // With the one in flight settled, a quiet probe is exact.
    w.settle_create(true);
    let mark = w.probe_mark();
    w.observe_ready_since(report(0), mark);
    assert_eq!(Worker::sessions_of(&w.snapshot()), 0);
}

/// The CI interleaving under churn, past the ambiguous probes: the count taken anyway
/// never makes a worker with a free slot look full.
#[test]
fn a_count_taken_under_churn_errs_low() {
    let w = worker(2);
    let now = Instant::now();
    assert!(w.try_reserve(now));
    w.settle_create(true);
    w.observe_ready(report(1));
    for _ in 0..=MAX_AMBIGUOUS_PROBES {
        // A create the worker counts before answering (2, full), then a delete: one
        // session left.
        let mark = w.probe_mark();
        assert!(w.try_reserve(now));
        w.settle_create(true);
        w.begin_delete();
        w.settle_delete(true);
        w.observe_ready_since(report(2), mark);
        assert!(w.try_reserve(now), "one of two slots is free");
        w.settle_create(false);
    }
}

#[test]
fn reserve_respects_capacity_and_probe_resets() {
    let w = worker(2);
    let now = Instant::now();
    assert!(w.try_reserve(now));
    assert!(w.try_reserve(now));
    assert!(!w.try_reserve(now));
    w.settle_create(false);
    assert!(w.try_reserve(now));
    for _ in 0..2 {
        w.settle_create(true);
    }
    w.observe_ready(ReadyReport {
        sessions_active: 0,
        max_sessions: Some(1),
        draining: false,
        full: false,
    });
    assert!(w.try_reserve(now), "probe reset the estimate");
    assert!(
        !w.try_reserve(now),
        "worker max_sessions=1 caps the capacity"
    );
    w.observe_ready(ReadyReport {
        sessions_active: 0,
        max_sessions: Some(10),
        draining: true,
        full: false,
    });
    assert!(!w.try_reserve(now), "draining");
    assert!(
        w.available(now),
        "draining workers still serve their sessions"
    );
}

#[test]
fn ejection_backs_off_and_probe_clears() {
    let w = worker(10);
    let e = EjectionSettings {
        base: Duration::from_secs(1),
        max: Duration::from_secs(5),
    };
    let t0 = Instant::now();
    assert_eq!(w.eject(&e, t0), Some(Duration::from_secs(1)));
    assert_eq!(w.eject(&e, t0), None, "already ejected");
    assert!(!w.available(t0));
    let t1 = t0 + Duration::from_secs(2);
    assert!(w.available(t1), "period over");
    assert_eq!(w.eject(&e, t1), Some(Duration::from_secs(2)));
    let t2 = t1 + Duration::from_secs(3);
    assert_eq!(w.eject(&e, t2), Some(Duration::from_secs(4)));
    let t3 = t2 + Duration::from_secs(5);
    assert_eq!(w.eject(&e, t3), Some(Duration::from_secs(5)), "capped");
    w.observe_ready(ReadyReport {
        sessions_active: 0,
        max_sessions: None,
        draining: false,
        full: false,
    });
    assert!(w.available(t3), "good probe clears the ejection");
    assert_eq!(
        w.eject(&e, t3),
        Some(Duration::from_secs(1)),
        "backoff reset"
    );
}

#[test]
fn removal_grace_and_operator_drain_survive_reloads() {
    let two =
        "workers:\n  - id: w1\n    address: 127.0.0.1:1\n  - id: w2\n    address: 127.0.0.1:2\n";
    let one = "workers:\n  - id: w1\n    address: 127.0.0.1:1\n";
    let cfg = |t: &str| crate::config::parse("t", t).expect("valid");
    let reg = Registry::new(cfg(two));
    assert!(reg.set_drain("w1", true));
    assert!(!reg.set_drain("nope", true));
    reg.set_config(cfg(&format!("{one}workers_removal_grace: 1h\n")));
    let ws = reg.workers();
    let w2 = ws.get("w2").expect("removing worker still routable");
    assert_eq!(w2.lifecycle_of(&w2.snapshot()), Lifecycle::Removing);
    assert!(!w2.placeable_of(&w2.snapshot(), Instant::now()));
    assert_eq!(ws.configured().count(), 1, "not hashed to");
    let w1 = ws.get("w1").expect("w1");
    assert_eq!(
        w1.lifecycle_of(&w1.snapshot()),
        Lifecycle::Draining,
        "drain kept"
    );
    // A second reload keeps the original deadline; a shorter grace (0s) ends it now.
    let until = w2.removing_until;
    reg.set_config(cfg(&format!("{one}workers_removal_grace: 1h\n")));
    assert_eq!(reg.workers().get("w2").expect("w2").removing_until, until);
    reg.set_config(cfg(&format!("{one}workers_removal_grace: 0s\n")));
    reg.set_config(cfg(one));
    assert!(reg.workers().get("w2").is_none());
    assert!(reg.set_drain("w1", false));
    let ws = reg.workers();
    let w1 = ws.get("w1").expect("w1");
    assert_eq!(w1.lifecycle_of(&w1.snapshot()), Lifecycle::Active);
}

fn spec(id: &str, port: u16) -> WorkerSpec {
    WorkerSpec {
        id: id.into(),
        address: format!("127.0.0.2:{port}").parse().expect("addr"),
        weight: 1,
        capacity: 10,
        drain: false,
    }
}

#[test]
fn discovered_workers_join_and_leave_through_the_removal_path() {
    let dns = "discovery:\n  dns:\n    name: w.test.\n    port: 1\nworkers_removal_grace: 1h\n";
    let cfg = |t: &str| crate::config::parse("t", t).expect("valid");
    let reg = Registry::new(cfg(&format!(
        "{dns}workers:\n  - id: s1\n    address: 127.0.0.1:1\n"
    )));
    assert!(reg.set_discovered(vec![spec("d1", 1), spec("d2", 2)]));
    assert!(
        !reg.set_discovered(vec![spec("d1", 1), spec("d2", 2)]),
        "unchanged"
    );
    let ws = reg.workers();
    assert_eq!(ws.configured().count(), 3);
    assert!(ws.get("d1").expect("d1").discovered);
    assert!(!ws.get("s1").expect("s1").discovered);
    // State carries over a rebuild; a worker leaving DNS is `removing`, still routable.
    ws.get("d1").expect("d1").add_session();
    assert!(reg.set_discovered(vec![spec("d1", 1)]));
    let ws = reg.workers();
    assert_eq!(
        Worker::sessions_of(&ws.get("d1").expect("d1").snapshot()),
        1
    );
    let d2 = ws.get("d2").expect("removing d2 still routable");
    assert_eq!(d2.lifecycle_of(&d2.snapshot()), Lifecycle::Removing);
    assert!(d2.discovered);
    assert_eq!(ws.configured().count(), 2);
    // A reload keeps the discovered set; a static id or address wins over DNS.
    reg.set_config(cfg(&format!(
        "{dns}workers:\n  - id: s1\n    address: 127.0.0.1:1\n  - id: d1\n    address: 127.0.0.1:9\n"
    )));
    let ws = reg.workers();
    let d1 = ws.get("d1").expect("d1");
    assert!(!d1.discovered, "the static d1 wins");
    assert_eq!(d1.spec.address.to_string(), "127.0.0.1:9");
    assert!(ws.get("d2").is_some(), "still within its grace");
    // Coming back to DNS ends the removal.
    assert!(reg.set_discovered(vec![spec("d1", 1), spec("d2", 2)]));
    let ws = reg.workers();
    let d2 = ws.get("d2").expect("d2");
    assert_eq!(d2.lifecycle_of(&d2.snapshot()), Lifecycle::Active);
    // Removing `discovery:` by a reload removes every discovered worker (grace 0: now).
    reg.set_config(cfg(
        "workers:\n  - id: s1\n    address: 127.0.0.1:1\nworkers_removal_grace: 0s\n",
    ));
    let ids: Vec<String> = reg.workers().live().map(|w| w.spec.id.clone()).collect();
    assert_eq!(ids, ["s1"]);
}
