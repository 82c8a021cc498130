//! Unit tests of the connection guard (`super`).

use super::*;

#[test]
fn head_scan_finds_the_empty_line() {
    let mut s = HeadScan::default();
    assert!(!s.feed(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    assert!(s.feed(b"\r\n"));
    // Split across reads, byte by byte.
    let mut s = HeadScan::default();
    let head = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
    let ends: Vec<bool> = head.iter().map(|b| s.feed(&[*b])).collect();
    assert_eq!(ends.iter().position(|e| *e), Some(head.len() - 1));
    // Bare LF, and leading empty lines skipped.
    assert!(HeadScan::default().feed(b"GET / HTTP/1.1\nA: b\n\n"));
    let mut s = HeadScan::default();
    assert!(!s.feed(b"\r\n\r\n\n"));
    assert!(!s.feed(b"GET / HTTP/1.1\r\n"));
    assert!(s.feed(b"\r\n"));
    // The h2 preface contains an empty line: it ends the "head" at once.
    assert!(HeadScan::default().feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
}

/// The byte-at-a-time state machine `HeadScan::feed` replaced: the reference it must
/// agree with, whatever the input and however it is split into reads.
#[derive(Default)]
struct SlowScan {
    started: bool,
    nl: u8,
}

impl SlowScan {
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if !self.started {
                if b == b'\r' || b == b'\n' {
                    continue;
                }
                self.started = true;
            }
            self.nl = match (self.nl, b) {
                (1 | 2, b'\n') => return true,
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        false
    }
}

#[test]
fn head_scan_agrees_with_the_byte_loop_on_every_input_and_split() {
    let alphabet = [b'\r', b'\n', b'a'];
    let mut cases = 0;
    for len in 0..=8u32 {
        for code in 0..alphabet.len().pow(len) {
            let mut c = code;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    let b = alphabet[c % alphabet.len()];
                    c /= alphabet.len();
                    b
                })
                .collect();
            // Whole, and split in two at every point.
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                let (mut fast, mut slow) = (HeadScan::default(), SlowScan::default());
                let f = fast.feed(a) || fast.feed(b);
                let s = slow.feed(a) || slow.feed(b);
                assert_eq!(f, s, "{input:?} cut at {cut}");
                cases += 1;
            }
        }
    }
    assert!(cases > 50_000);
}

#[tokio::test(start_paused = true)]
async fn a_whole_head_makes_no_timer_and_a_reused_timer_still_fires() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(1024);
    let c = counter();
    let mut d = HeadDeadline::new(Box::new(server), Duration::from_secs(5), c.clone());
    let mut buf = [0u8; 256];
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert!(d.read(&mut buf).await.expect("read") > 0);
    assert!(
        d.sleep.is_none(),
        "a head that arrives whole needs no timer"
    );
    assert_eq!(d.state, Head::Done);
    // A head in two pieces: the first wait makes the timer; the head completes in time.
    d.rearm(Duration::from_secs(5));
    client.write_all(b"GET / HT").await.expect("write");
    assert_eq!(d.read(&mut buf).await.expect("read"), 8);
    let reader = tokio::spawn(async move {
        let r = d.read(&mut buf).await.map(|n| n > 0);
        (d, r)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .write_all(b"TP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (mut d, r) = reader.await.expect("join");
    assert!(r.expect("in time"));
    assert!(d.sleep.is_some());
    assert_eq!(d.state, Head::Done);
    // The next head stalls: the same timer, reset to the new deadline, fires 5 s after
    // that head's first byte (not at the old deadline).
    d.rearm(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(30)).await;
    client.write_all(b"GET").await.expect("write");
    let start = tokio::time::Instant::now();
    assert_eq!(d.read(&mut buf).await.expect("read"), 3);
    let e = d.read(&mut buf).await.expect_err("timed out");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(c.get(), 1);
}

#[test]
fn tracker_limits_and_releases() {
    let t = Arc::new(Tracker::default());
    let a: IpAddr = "127.0.0.2".parse().expect("ip");
    let b: IpAddr = "::ffff:127.0.0.3".parse().expect("ip");
    let g1 = t.admit(Some(a), 3, Some(2), false, None).expect("1");
    let g2 = t.admit(Some(a), 3, Some(2), false, None).expect("2");
    assert_eq!(
        t.admit(Some(a), 3, Some(2), false, None).err(),
        Some(Refusal::PerIp)
    );
    // Exempt (trusted proxy): only the total applies.
    let g3 = t.admit(Some(a), 3, Some(2), true, None).expect("exempt");
    assert_eq!(
        t.admit(Some(b), 3, Some(2), false, None).err(),
        Some(Refusal::Total)
    );
    assert_eq!((t.total(), t.of(a)), (3, 3));
    drop((g1, g2, g3));
    assert_eq!((t.total(), t.of(a)), (0, 0));
    let g = t.admit(Some(b), 0, None, false, None).expect("no limits");
    assert_eq!(t.of("127.0.0.3".parse().expect("ip")), 1, "mapped v6 = v4");
    drop(g);
    assert!(t.shards.iter().all(|s| s.lock().expect("lock").is_empty()));
}

fn counter() -> IntCounter {
    IntCounter::new("t", "t").expect("counter")
}

#[tokio::test]
async fn deadline_cuts_a_dribbled_head_not_a_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Dribbled head: closed after the timeout although bytes keep coming.
    let (mut client, server) = tokio::io::duplex(1024);
    let c = counter();
    let mut d = HeadDeadline::new(Box::new(server), Duration::from_millis(300), c.clone());
    let writer = tokio::spawn(async move {
        for b in b"GET / HTTP/1.1\r\nHost: slow\r\n" {
            if client.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client
    });
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let err = loop {
        match d.read(&mut buf).await {
            Ok(0) => panic!("unexpected EOF"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(start.elapsed() < Duration::from_millis(1000));
    assert_eq!(c.get(), 1);
    let _ = writer.await;

    // Silent connection: the timer alone fires.
    let (_client, server) = tokio::io::duplex(1024);
    let mut d = HeadDeadline::new(Box::new(server), Duration::from_millis(100), c.clone());
    let e = d.read(&mut buf).await.expect_err("timeout");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(c.get(), 2);

    // Complete head, then a slow body and a long pause: never cut.
    let (mut client, server) = tokio::io::duplex(1024);
    let mut d = HeadDeadline::new(Box::new(server), Duration::from_millis(100), c.clone());
    client
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n")
        .await
        .expect("head");
    let n = d.read(&mut buf).await.expect("head read");
    assert!(n > 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.write_all(b"abc").await.expect("body");
    assert_eq!(d.read(&mut buf).await.expect("body read"), 3);

    // Keep-alive: re-armed, idle before the next request is not counted.
    d.rearm(Duration::from_millis(100));
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        loop {
            match d.read(&mut buf).await {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
            if got.ends_with(b"\r\n\r\n") {
                return Ok(got);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .write_all(b"GET /2 HTTP/1.1\r\n\r\n")
        .await
        .expect("second head");
    let got = reader.await.expect("join").expect("second head read");
    assert!(got.starts_with(b"GET /2"));
    assert_eq!(c.get(), 2, "no new timeout");
}
