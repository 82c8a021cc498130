//! Real TLS handshakes against the exact acceptor configuration the proxy uses:
//! `build_tls_settings` output, taken out of pingora's `TlsSettings` (DerefMut) and driven
//! with pingora's own `handshake_with_callback` + our `SniResolver`.

use super::*;
use crate::testutil::{config_with, Leaf, TestCa};
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::tls::server::handshake_with_callback;
use pingora::tls::ssl::{
    SslAcceptor, SslConnector, SslMethod, SslStream, SslVerifyMode, SslVersion,
};
use pingora::tls::x509::X509;
use sha2::Digest;
use std::io::{Read, Write};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Start an echo server with the proxy's settings; returns its address.
async fn serve(cfg: &TlsConfig, store: Arc<CertStore>) -> SocketAddr {
    let mut settings = build_tls_settings(cfg, store.clone()).expect("settings");
    let placeholder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    let acceptor = std::mem::replace(&mut *settings, placeholder).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let cb = SniResolver::new(store.clone());
            tokio::spawn(async move {
                let Ok(mut s) = handshake_with_callback(&acceptor, Stream::from(tcp), &cb).await
                else {
                    return;
                };
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    let _ = s.flush().await;
                }
            });
        }
    });
    addr
}

#[derive(Default, Clone)]
struct Client {
    sni: Option<&'static str>,
    alpn: Option<&'static [u8]>,
    min: Option<SslVersion>,
    max: Option<SslVersion>,
    ciphers: Option<&'static str>,
    weak: bool,
}

type Conn = SslStream<std::net::TcpStream>;

/// Blocking openssl client verifying the chain against `ca_pem` (and the SNI name).
fn connect(addr: SocketAddr, ca_pem: &str, c: &Client) -> Result<Conn, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.cert_store_mut()
        .add_cert(X509::from_pem(ca_pem.as_bytes()).expect("ca"))
        .expect("add ca");
    b.set_verify(SslVerifyMode::PEER);
    if c.weak {
        b.set_security_level(0);
        b.set_cipher_list("ALL:@SECLEVEL=0").expect("ciphers");
    }
    if let Some(l) = c.ciphers {
        b.set_cipher_list(l).expect("ciphers");
    }
    b.set_min_proto_version(c.min).expect("min");
    b.set_max_proto_version(c.max).expect("max");
    if let Some(a) = c.alpn {
        b.set_alpn_protos(a).expect("alpn");
    }
    let conf = b.build().configure().map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let res = match c.sni {
        Some(name) => conf.connect(name, tcp),
        None => conf
            .use_server_name_indication(false)
            .verify_hostname(false)
            .connect("", tcp),
    };
    res.map_err(|e| e.to_string())
}

async fn connect_async(addr: SocketAddr, ca: String, c: Client) -> Result<Conn, String> {
    tokio::task::spawn_blocking(move || connect(addr, &ca, &c))
        .await
        .expect("join")
}

fn served(conn: &Conn) -> String {
    let cert = conn.ssl().peer_certificate().expect("peer cert");
    hex::encode(sha2::Sha256::digest(cert.to_der().expect("der")))
}

async fn echo(mut conn: Conn, msg: &'static [u8]) -> Conn {
    tokio::task::spawn_blocking(move || {
        conn.write_all(msg).expect("write");
        let mut buf = vec![0u8; msg.len()];
        conn.read_exact(&mut buf).expect("read");
        assert_eq!(buf, msg);
        conn
    })
    .await
    .expect("join")
}

struct Fixture {
    ca: TestCa,
    a: Leaf,
    w: Leaf,
    dir: tempfile::TempDir,
    cfg: TlsConfig,
    store: Arc<CertStore>,
}

fn fixture() -> Fixture {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let a = ca.leaf(&["a.example.com"], None);
    let w = ca.leaf(&["*.wild.test"], None);
    let (ac, ak) = a.write(dir.path(), "a", None);
    let (wc, wk) = w.write(dir.path(), "w", None);
    let cfg = config_with(&[(&["a.example.com"], &ac, &ak), (&["*.wild.test"], &wc, &wk)]);
    let store = CertStore::from_config(&cfg).expect("store");
    Fixture {
        ca,
        a,
        w,
        dir,
        cfg,
        store,
    }
}

#[tokio::test]
async fn serves_certificate_by_sni_with_verified_chain() {
    let f = fixture();
    let addr = serve(&f.cfg, f.store.clone()).await;
    let ca = f.ca.pem();
    let c = |sni| Client {
        sni,
        ..Default::default()
    };
    let conn = connect_async(addr, ca.clone(), c(Some("a.example.com")))
        .await
        .expect("a");
    assert_eq!(served(&conn), f.a.fingerprint);
    echo(conn, b"hello").await;
    let conn = connect_async(addr, ca.clone(), c(Some("api.wild.test")))
        .await
        .expect("wild");
    assert_eq!(served(&conn), f.w.fingerprint);
    // No SNI: the default (first) certificate.
    let conn = connect_async(addr, ca.clone(), c(None))
        .await
        .expect("default");
    assert_eq!(served(&conn), f.a.fingerprint);
    // Unknown name: default certificate, which the client rightly rejects (name mismatch).
    let e = connect_async(addr, ca, c(Some("other.org")))
        .await
        .expect_err("mismatch");
    assert!(e.contains("certificate verify failed"), "{e}");
}

#[tokio::test]
async fn alpn_negotiates_h2_and_http11() {
    let f = fixture();
    let addr = serve(&f.cfg, f.store.clone()).await;
    let ca = f.ca.pem();
    let c = |alpn| Client {
        sni: Some("a.example.com"),
        alpn: Some(alpn),
        ..Default::default()
    };
    let conn = connect_async(addr, ca.clone(), c(b"\x08http/1.1\x02h2"))
        .await
        .expect("h2");
    assert_eq!(conn.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    let conn = connect_async(addr, ca.clone(), c(b"\x08http/1.1"))
        .await
        .expect("h1");
    assert_eq!(conn.ssl().selected_alpn_protocol(), Some(&b"http/1.1"[..]));

    let mut cfg = f.cfg.clone();
    cfg.h2 = false;
    let addr = serve(&cfg, f.store.clone()).await;
    let conn = connect_async(addr, ca, c(b"\x02h2\x08http/1.1"))
        .await
        .expect("h1 only");
    assert_eq!(conn.ssl().selected_alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn old_protocols_and_cbc_ciphers_refused() {
    let f = fixture();
    let addr = serve(&f.cfg, f.store.clone()).await;
    let ca = f.ca.pem();
    let sni = Some("a.example.com");
    // TLS 1.0/1.1-only client (client security level lowered so it really offers them).
    for v in [SslVersion::TLS1, SslVersion::TLS1_1] {
        let c = Client {
            sni,
            min: Some(v),
            max: Some(v),
            weak: true,
            ..Default::default()
        };
        let e = connect_async(addr, ca.clone(), c)
            .await
            .expect_err("old protocol");
        // The *server* refuses: it answers with a protocol_version alert (70).
        assert!(e.contains("alert protocol version"), "{v:?}: {e}");
    }
    // CBC-only TLS 1.2 client: no shared cipher.
    let cbc = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384";
    let c = Client {
        sni,
        max: Some(SslVersion::TLS1_2),
        ciphers: Some(cbc),
        ..Default::default()
    };
    let e = connect_async(addr, ca.clone(), c).await.expect_err("cbc");
    // Server's handshake_failure alert (40): no shared cipher.
    assert!(e.contains("alert handshake failure"), "{e}");
    // Controls: TLS 1.2 AEAD and TLS 1.3 work.
    let c = Client {
        sni,
        max: Some(SslVersion::TLS1_2),
        ciphers: Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
        ..Default::default()
    };
    let conn = connect_async(addr, ca.clone(), c)
        .await
        .expect("tls1.2 gcm");
    assert_eq!(conn.ssl().version_str(), "TLSv1.2");
    let c = Client {
        sni,
        ..Default::default()
    };
    let conn = connect_async(addr, ca.clone(), c).await.expect("tls1.3");
    assert_eq!(conn.ssl().version_str(), "TLSv1.3");

    // min_version 1.3 refuses TLS 1.2.
    let mut cfg = f.cfg.clone();
    cfg.min_version = crate::config::MinVersion::Tls13;
    let addr = serve(&cfg, f.store.clone()).await;
    let c = Client {
        sni,
        max: Some(SslVersion::TLS1_2),
        ..Default::default()
    };
    connect_async(addr, ca, c).await.expect_err("1.2 refused");
}

#[tokio::test]
async fn rotation_applies_to_next_handshake_and_keeps_open_connections() {
    let f = fixture();
    let addr = serve(&f.cfg, f.store.clone()).await;
    let ca = f.ca.pem();
    let c = Client {
        sni: Some("a.example.com"),
        ..Default::default()
    };
    let open = connect_async(addr, ca.clone(), c.clone())
        .await
        .expect("first");
    assert_eq!(served(&open), f.a.fingerprint);
    let open = echo(open, b"before").await;

    // Rotate a.example.com's files, then reload.
    let a2 = f.ca.leaf(&["a.example.com"], None);
    a2.write(f.dir.path(), "a", None);
    let r = f.store.reload().expect("reload");
    assert!(r.changed);
    let next = connect_async(addr, ca.clone(), c.clone())
        .await
        .expect("next");
    assert_eq!(served(&next), a2.fingerprint);
    // The connection opened before the reload still works, with its original cert.
    assert_eq!(served(&open), f.a.fingerprint);
    echo(open, b"after reload").await;

    // A bad rotation is refused; handshakes keep getting the last good cert.
    std::fs::write(f.dir.path().join("a.key"), f.w.key_pem.as_bytes()).expect("w");
    f.store.reload().expect_err("mismatch");
    let again = connect_async(addr, ca, c).await.expect("still serving");
    assert_eq!(served(&again), a2.fingerprint);
}

#[tokio::test]
async fn dev_certificate_served_for_localhost() {
    let cfg = config_with(&[]);
    let store = CertStore::from_config(&cfg).expect("dev");
    let addr = serve(&cfg, store.clone()).await;
    let dev_pem = store.current().default_cert().leaf.to_pem().expect("pem");
    let ca = String::from_utf8(dev_pem).expect("utf8");
    let conn = connect_async(
        addr,
        ca,
        Client {
            sni: Some("localhost"),
            ..Default::default()
        },
    )
    .await
    .expect("self-signed trusted explicitly");
    assert_eq!(served(&conn), store.current().default_cert().fingerprint);
}
