//! Test certificates (a private CA and leaves signed by it, rcgen) and a fake TLS worker.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::X509;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// A TLS server on `at` presenting `leaf` that answers every `GET /health/*` with
/// `{"status":"ready","node_id":node,...}`; other requests are counted in `others`.
pub struct TlsFakeWorker {
    pub probes: Arc<AtomicU64>,
    pub others: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFakeWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFakeWorker {
    pub async fn start(at: SocketAddr, leaf: &Leaf, node: &str) -> TlsFakeWorker {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        b.set_certificate(&X509::from_pem(leaf.cert_pem.as_bytes()).expect("cert"))
            .expect("set cert");
        b.set_private_key(&PKey::private_key_from_pem(leaf.key_pem.as_bytes()).expect("key"))
            .expect("set key");
        let acceptor = Arc::new(b.build());
        let l = tokio::net::TcpListener::bind(at)
            .await
            .expect("bind TLS fake");
        let (probes, others) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (p, o, node) = (probes.clone(), others.clone(), node.to_string());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let (acceptor, p, o, node) = (acceptor.clone(), p.clone(), o.clone(), node.clone());
                tokio::spawn(async move {
                    let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut s) = tokio_openssl::SslStream::new(ssl, tcp) else {
                        return;
                    };
                    if std::pin::Pin::new(&mut s).accept().await.is_err() {
                        return; // the client refused the certificate
                    }
                    let mut buf = vec![0u8; 16 * 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return; // a handshake-only check
                    }
                    let resp = fake_worker_answer(&buf[..n], &node, &p, &o, "{}");
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        TlsFakeWorker {
            probes,
            others,
            task,
        }
    }
}
