//! Worker identity: who answers at a worker's address.
//!
//! - **Plain HTTP, `worker_auth.key` set**: every health probe (and every discovery
//!   identity probe) sends a fresh random challenge ([`hotplex_common::identity`]); the
//!   answer must carry an HMAC-SHA256 proof keyed by the shared worker key over the
//!   challenge, the node id expected at that address (the configured worker id, or the
//!   node id first learnt for a discovered address), the address the worker saw the probe
//!   arrive on and the exact body; that address must be the one the proxy dialled (else
//!   `address_mismatch`: an impostor relaying the probe to the real worker), unless
//!   `worker_auth.allow_address_translation` (NAT in front of workers) skips that one
//!   comparison. A missing, outdated (v1) or wrong proof, or another node id, marks the
//!   worker an impostor at once: no request, no new session, until a probe proves it again. Without the key a worker's identity is only
//!   what it says (`identity: unchecked` in `/admin/workers`).
//! - **Upstream TLS**: every connection (requests and probes) verifies the chain against
//!   `upstream_tls.ca_file` and the name `upstream_tls.server_name` (default: the worker
//!   id) in the worker's certificate; a probe refused for its certificate counts as an
//!   identity failure too.
//!
//! Every failure is counted (`hotplex_proxy_worker_identity_failures_total{reason}`); the
//! first of an episode is logged at WARN and audited (`worker.identity`, `denied`).

use std::net::SocketAddr;
use std::time::Duration;

use hotplex_common::identity as idp;

use super::health::{FetchError, ProbeAnswer};
use super::registry::{Worker, WorkerState};
use crate::audit;
use crate::config::runtime::valid_worker_id;
use crate::metrics::IdentityMetrics;
use crate::tls::TlsName;

/// Failure reasons (the metric's `reason` label).
pub use crate::metrics::IDENTITY_FAILURE_REASONS as REASONS;

/// Why an identity check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// One of [`REASONS`].
    pub reason: &'static str,
    pub detail: String,
}

impl Failure {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Failure {
        Failure {
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// How a probe answer's proof is checked: the shared key, and whether the address the
/// worker saw must be the one dialled.
#[derive(Clone, Copy)]
pub struct ProofCheck<'a> {
    pub key: &'a [u8],
    /// `worker_auth.allow_address_translation`: skip the address comparison (the proof
    /// still binds the address the worker reports).
    pub allow_address_translation: bool,
}

/// Checks a probe answer from `dialled`: it names `expected` as its `node_id` and
/// carries a current proof made with the key for `challenge` over that node id, the
/// address the worker reports and its body; that address is `dialled` (unless address
/// translation is allowed).
pub fn check_answer(
    raw: &ProbeAnswer,
    pc: ProofCheck<'_>,
    challenge: &str,
    expected: &str,
    dialled: SocketAddr,
) -> Result<(), Failure> {
    let body = &raw.body;
    let claimed = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|j| {
            j.get("node_id")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
    match claimed.as_deref() {
        Some(id) if id == expected => {}
        Some(id) => {
            let shown: String = id.chars().take(64).collect();
            return Err(Failure::new(
                "wrong_node",
                format!("answers as node {shown:?}, expected {expected:?}"),
            ));
        }
        None => {
            return Err(Failure::new(
                "wrong_node",
                format!("no node_id in the answer, expected {expected:?}"),
            ))
        }
    }
    let Some(proof) = raw.header(idp::X_HOTPLEX_IDENTITY) else {
        return Err(Failure::new(
            "missing_proof",
            format!(
                "no {} header (worker without the shared key?)",
                idp::X_HOTPLEX_IDENTITY
            ),
        ));
    };
    if idp::outdated(proof) {
        return Err(Failure::new(
            "old_proof",
            "a v1 identity proof (binds no address): upgrade the worker to a version that sends v2 proofs",
        ));
    }
    let Some(address) = raw.header(idp::X_HOTPLEX_IDENTITY_ADDRESS) else {
        return Err(Failure::new(
            "missing_proof",
            format!("no {} header", idp::X_HOTPLEX_IDENTITY_ADDRESS),
        ));
    };
    if !idp::verify(pc.key, challenge, expected, address, body, proof) {
        return Err(Failure::new(
            "bad_proof",
            "the proof was not made with worker_auth.key for this challenge, address and body",
        ));
    }
    if pc.allow_address_translation {
        return Ok(());
    }
    let seen = address.parse::<SocketAddr>().ok().map(idp::canonical);
    if seen == Some(idp::canonical(dialled)) {
        Ok(())
    } else {
        let shown: String = address.chars().take(64).collect();
        Err(Failure::new(
            "address_mismatch",
            format!("the proof was made for {shown:?}, not the address dialled ({dialled}): relayed (or NAT in front of the worker: worker_auth.allow_address_translation)"),
        ))
    }
}

/// Counts a failure; `first` (of an episode): also a WARN and an audit line.
pub fn record(worker: &str, addr: SocketAddr, f: &Failure, first: bool) {
    if let Some(m) = IdentityMetrics::get() {
        m.failures.with_label_values(&[f.reason]).inc();
    }
    if first {
        tracing::warn!(worker, address = %addr, reason = f.reason, detail = %f.detail, "worker identity check failed: no traffic to this address");
        audit::record(
            audit::Actor {
                name: "-",
                ip: Some(addr.ip()),
            },
            "worker.identity",
            "denied",
            &format!(
                "worker={worker} address={addr} reason={} {}",
                f.reason, f.detail
            ),
        );
    } else {
        tracing::debug!(worker, address = %addr, reason = f.reason, detail = %f.detail, "worker identity check failed again");
    }
}

/// Why an address got no worker id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifyError {
    /// No (parsable) answer.
    Unreachable(String),
    /// `node_id` missing or not a valid worker id (`[a-z0-9-]`, 1-63).
    InvalidId(String),
    /// It could not prove the id it reports (proof or certificate): never used, and a
    /// known address failing so does not keep its id.
    Unauthenticated(Failure),
}

/// How identity probes authenticate: the shared worker key, upstream TLS.
#[derive(Clone, Copy)]
pub struct Auth<'a> {
    pub key: Option<&'a [u8]>,
    /// `worker_auth.allow_address_translation`.
    pub allow_address_translation: bool,
    pub tls: Option<&'a crate::tls::WorkerTls>,
    /// SNI of the chain-only TLS probe (the discovery name).
    pub sni: &'a str,
}

impl Auth<'static> {
    /// No key, no TLS.
    pub const NONE: Auth<'static> = Auth {
        key: None,
        allow_address_translation: false,
        tls: None,
        sni: "",
    };
}

/// Asks `addr` for its `node_id`, authenticated per `auth`.
pub async fn identify(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    auth: Auth<'_>,
) -> Result<String, IdentifyError> {
    let challenge = auth.key.map(|_| hotplex_common::identity::new_challenge());
    let tls = auth.tls.map(|t| (t, TlsName::ChainOnly(auth.sni)));
    let raw = match super::health::fetch(addr, path, timeout, tls, challenge.as_deref()).await {
        Ok(raw) => raw,
        Err(FetchError::Certificate(e)) => {
            return Err(IdentifyError::Unauthenticated(Failure::new(
                "certificate",
                e,
            )))
        }
        Err(FetchError::Other(e)) => return Err(IdentifyError::Unreachable(e)),
    };
    let (_, json) = super::health::parse_json(&raw).map_err(IdentifyError::Unreachable)?;
    let id = match json.get("node_id").and_then(|v| v.as_str()) {
        Some(id) if valid_worker_id(id) => id.to_string(),
        Some(id) => {
            return Err(IdentifyError::InvalidId(format!(
                "node_id {id:?} is not a worker id (1-63 characters of [a-z0-9-])"
            )))
        }
        None => return Err(IdentifyError::InvalidId("no node_id in the answer".into())),
    };
    if let (Some(k), Some(c)) = (auth.key, challenge.as_deref()) {
        let pc = ProofCheck {
            key: k,
            allow_address_translation: auth.allow_address_translation,
        };
        check_answer(&raw, pc, c, &id, addr).map_err(IdentifyError::Unauthenticated)?;
    }
    if let Some(t) = auth.tls.filter(|t| t.cfg.verify) {
        // The certificate must name the id the address reports.
        let check = crate::tls::connect_worker(addr, Some((t, TlsName::Worker(&id))));
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok(_)) => {}
            Ok(Err(FetchError::Certificate(e))) => {
                return Err(IdentifyError::Unauthenticated(Failure::new(
                    "certificate",
                    e,
                )))
            }
            Ok(Err(FetchError::Other(e))) => return Err(IdentifyError::Unreachable(e)),
            Err(_) => {
                return Err(IdentifyError::Unreachable(format!(
                    "TLS name check timed out after {timeout:?}"
                )))
            }
        }
    }
    Ok(id)
}

impl Worker {
    /// Its identity allows traffic: not an impostor, and proven when proofs are required.
    pub fn identity_ok_of(&self, s: &WorkerState) -> bool {
        !s.impostor && (s.verified || !self.identity_required)
    }

    /// `verified`, `impostor`, `unverified` (required, not proven yet) or `unchecked`
    /// (no `worker_auth.key`: identity is not authenticated).
    pub fn identity_of(&self, s: &WorkerState) -> &'static str {
        if s.impostor {
            "impostor"
        } else if s.verified {
            "verified"
        } else if self.identity_required {
            "unverified"
        } else {
            "unchecked"
        }
    }

    /// An identity check passed (`true`: it was an impostor or unproven until now).
    pub fn identity_proven(&self) -> bool {
        let mut s = self.lock();
        let changed = s.impostor || !s.verified;
        s.impostor = false;
        s.verified = true;
        changed
    }

    /// An identity check failed: no traffic until a probe proves it again. Returns `true`
    /// the first time (log and audit once per episode, count every time).
    pub fn identity_failed(&self) -> bool {
        let mut s = self.lock();
        let first = !s.impostor;
        s.impostor = true;
        s.verified = false;
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const AT: &str = "10.0.0.5:8080";

    fn answer(body: &str, proof: Option<&str>) -> ProbeAnswer {
        answer_at(body, proof, Some(AT))
    }

    fn answer_at(body: &str, proof: Option<&str>, address: Option<&str>) -> ProbeAnswer {
        let mut headers = http::HeaderMap::new();
        let mut set = |name: &'static str, v: &str| {
            headers.insert(name, http::HeaderValue::from_str(v).expect("header value"));
        };
        set("content-type", "application/json");
        if let Some(p) = proof {
            set(idp::X_HOTPLEX_IDENTITY, p);
        }
        if let Some(a) = address {
            set(idp::X_HOTPLEX_IDENTITY_ADDRESS, a);
        }
        ProbeAnswer {
            status: 200,
            headers,
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn answers_are_checked_for_node_and_proof() {
        let key = b"0123456789abcdef-worker-key";
        let pc = ProofCheck {
            key,
            allow_address_translation: false,
        };
        let dialled: SocketAddr = AT.parse().expect("addr");
        let c = idp::new_challenge();
        let body = r#"{"status":"ready","node_id":"w1","sessions_active":0}"#;
        let good = idp::proof(key, &c, "w1", AT, body.as_bytes());
        assert_eq!(
            check_answer(&answer(body, Some(&good)), pc, &c, "w1", dialled),
            Ok(())
        );
        let reason = |raw: ProbeAnswer, expected: &str| {
            check_answer(&raw, pc, &c, expected, dialled)
                .expect_err("refused")
                .reason
        };
        assert_eq!(reason(answer(body, None), "w1"), "missing_proof");
        assert_eq!(reason(answer(body, Some(&good)), "w2"), "wrong_node");
        let other = idp::proof(b"another-key-0123456", &c, "w1", AT, body.as_bytes());
        assert_eq!(reason(answer(body, Some(&other)), "w1"), "bad_proof");
        // A proof replayed with a changed body (0 sessions -> draw placements) fails.
        let lying = r#"{"status":"ready","node_id":"w1","sessions_active":9}"#;
        assert_eq!(reason(answer(lying, Some(&good)), "w1"), "bad_proof");
        // A replay of an old answer (another challenge) fails.
        let old = idp::proof(key, &idp::new_challenge(), "w1", AT, body.as_bytes());
        assert_eq!(reason(answer(body, Some(&old)), "w1"), "bad_proof");
        assert_eq!(reason(answer("garbage", Some(&good)), "w1"), "wrong_node");
    }

    #[test]
    fn relayed_and_outdated_proofs_are_refused() {
        let key = b"0123456789abcdef-worker-key";
        let strict = ProofCheck {
            key,
            allow_address_translation: false,
        };
        let nat = ProofCheck {
            allow_address_translation: true,
            ..strict
        };
        let c = idp::new_challenge();
        let body = r#"{"status":"ready","node_id":"w1","sessions_active":0}"#;
        // The real worker at 10.0.0.9:8080 answered a probe relayed by an impostor the
        // proxy dialled at 10.0.0.5:8080: its proof is genuine, for its own address.
        let real = "10.0.0.9:8080";
        let relayed = idp::proof(key, &c, "w1", real, body.as_bytes());
        let dialled: SocketAddr = AT.parse().expect("addr");
        let raw = answer_at(body, Some(&relayed), Some(real));
        let f = check_answer(&raw, strict, &c, "w1", dialled).expect_err("relay");
        assert_eq!(f.reason, "address_mismatch");
        assert!(f.detail.contains(real) && f.detail.contains(AT), "{f}");
        // With the opt-out (NAT), the same answer is accepted: the relay is not detected.
        assert_eq!(check_answer(&raw, nat, &c, "w1", dialled), Ok(()));
        // Rewriting the address to the dialled one breaks the proof.
        let forged = answer_at(body, Some(&relayed), Some(AT));
        let f = check_answer(&forged, strict, &c, "w1", dialled).expect_err("forged");
        assert_eq!(f.reason, "bad_proof");
        // No address header at all.
        let bare = answer_at(body, Some(&relayed), None);
        let f = check_answer(&bare, nat, &c, "w1", dialled).expect_err("no address");
        assert_eq!(f.reason, "missing_proof");
        // An IPv4-mapped view of the dialled address is the same address.
        let mapped = "[::ffff:10.0.0.5]:8080";
        let p = idp::proof(key, &c, "w1", mapped, body.as_bytes());
        let raw = answer_at(body, Some(&p), Some(mapped));
        assert_eq!(check_answer(&raw, strict, &c, "w1", dialled), Ok(()));
        // A v1 worker (bare hex over challenge, node id and body): refused as outdated,
        // with the opt-out too.
        let v1 = "e93c944bc457460d1079b184dff46a8f5bc6665ec86523741896ebbbbcf0a542";
        for pc in [strict, nat] {
            let f = check_answer(&answer_at(body, Some(v1), None), pc, &c, "w1", dialled)
                .expect_err("v1");
            assert_eq!(f.reason, "old_proof");
            assert!(f.detail.contains("upgrade the worker"), "{f}");
        }
    }

    #[test]
    fn an_impostor_or_unproven_worker_gets_nothing() {
        let mut w = crate::upstream::registry::tests::worker(10);
        let now = Instant::now();
        assert_eq!(w.identity_of(&w.snapshot()), "unchecked");
        assert!(
            w.available(now),
            "no worker_auth.key: identity not required"
        );
        w.identity_required = true;
        assert_eq!(w.identity_of(&w.snapshot()), "unverified");
        assert!(!w.available(now) && !w.try_reserve(now), "not proven yet");
        assert!(w.identity_proven());
        assert!(!w.identity_proven(), "already proven");
        assert!(w.available(now) && w.try_reserve(now));
        assert!(w.identity_failed(), "first failure of an episode");
        assert!(!w.identity_failed());
        assert_eq!(w.identity_of(&w.snapshot()), "impostor");
        assert!(!w.available(now) && !w.try_reserve(now));
        w.identity_required = false;
        assert!(
            !w.available(now),
            "an impostor is held out even without the key"
        );
        assert!(w.identity_proven());
        assert!(w.available(now));
    }

    #[test]
    fn identify_parses_node_id() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let at = l.local_addr().expect("addr");
            let bodies = [
                r#"{"status":"live","node_id":"w-7"}"#,
                r#"{"status":"live","node_id":"Not_Valid"}"#,
                r#"{"status":"live"}"#,
            ];
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                for body in bodies {
                    let (mut s, _) = l.accept().await.expect("accept");
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                }
            });
            let t = Duration::from_secs(2);
            assert_eq!(
                identify(at, "/health/live", t, Auth::NONE).await,
                Ok("w-7".into())
            );
            assert!(matches!(
                identify(at, "/health/live", t, Auth::NONE).await,
                Err(IdentifyError::InvalidId(_))
            ));
            assert!(matches!(
                identify(at, "/health/live", t, Auth::NONE).await,
                Err(IdentifyError::InvalidId(_))
            ));
            assert!(matches!(
                identify(at, "/health/live", t, Auth::NONE).await,
                Err(IdentifyError::Unreachable(_))
            ));
        });
    }
}
