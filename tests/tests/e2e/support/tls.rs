//! Test certificates (a private CA and leaves signed by it, rcgen), a real worker process
//! serving TLS with such a leaf (its own `tls:` listener), and the answer of a fake worker.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A private CA for the tests.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new() -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "hotplex e2e CA");
        let issuer =
            CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca");
        Ca { issuer }
    }
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{stem}.crt"));
        let k = dir.join(format!("{stem}.key"));
        std::fs::write(&c, &self.cert_pem).expect("write cert");
        std::fs::write(&k, &self.key_pem).expect("write key");
        (c, k)
    }
}

/// The answer of a fake worker (no identity proof) to one request `head`: a `/health/*`
/// probe gets `{"status":"ready","node_id":node,"sessions_active":0,...}` (the most
/// attractive worker there is) and counts in `probes`; anything else gets `other_body` and
/// counts in `others`.
pub fn fake_worker_answer(
    head: &[u8],
    node: &str,
    probes: &AtomicU64,
    others: &AtomicU64,
    other_body: &str,
) -> String {
    let body = if head.starts_with(b"GET /health/") {
        probes.fetch_add(1, Ordering::Relaxed);
        format!(
            r#"{{"status":"ready","node_id":"{node}","sessions_active":0,"max_sessions":1000}}"#
        )
    } else {
        others.fetch_add(1, Ordering::Relaxed);
        other_body.to_string()
    };
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A worker process serving TLS with `leaf` (written to its directory, key mode 0600).
pub struct TlsWorker {
    pub guard: hotplex_e2e::ChildGuard,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Spawns it with node id `id` on `listen` (port 0: the worker picks), `extra` appended to
/// its config, the secret-file check set to refuse; returns once the address file is written.
pub async fn spawn_tls_worker(id: &str, listen: SocketAddr, leaf: &Leaf, extra: &str) -> TlsWorker {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = leaf.write(dir.path(), "worker");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let cfg = dir.path().join("worker.yaml");
    std::fs::write(
        &cfg,
        format!(
            "tls:\n  cert_file: \"{}\"\n  key_file: \"{}\"\nsecurity:\n  refuse_readable_secrets: true\nagent:\n  demo_test_hooks: true\n{}{extra}",
            cert.display(),
            key.display(),
            super::POOL_TESTS_TENANT_QUOTAS,
        ),
    )
    .expect("write worker config");
    let addr_path = dir.path().join("addr.json");
    let mut cmd = std::process::Command::new(super::proxy::WORKER_BIN);
    cmd.arg("--listen")
        .arg(listen.to_string())
        .arg("--addr-file")
        .arg(&addr_path)
        .arg("--node-id")
        .arg(id)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn");
    let mut guard = hotplex_e2e::ChildGuard::spawn(&format!("TLS worker {id}"), &mut cmd);
    let bound = super::addr_file(&addr_path, &mut guard).await;
    let addr = super::addr_of(&bound, "listen");
    TlsWorker {
        guard,
        addr,
        _dir: dir,
    }
}

/// An HTTPS client trusting only `ca`, reaching `name` at `addr`.
pub fn https_to(ca: &Ca, name: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("ca"))
        .resolve(name, addr)
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .expect("https client")
}
