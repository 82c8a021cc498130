//! `pingora-min`: the framework floor of `benches/load_bench.sh`, a minimal pingora 0.9
//! proxy built with the same profile, allocator and pingora features as hotplex-proxy.
//!
//! It does what the nginx and HAProxy configs of the bench do and nothing more: a request
//! without the API key (`X-API-Key`) gets a 401; the others go to one of the upstreams,
//! chosen by a hash of `X-Hotplex-Session` (sticky, like nginx's `hash`). No routing table,
//! no session signatures, no rate limits, no metrics, no logs, pingora's default settings
//! otherwise. Its row in the load-bench table is what pingora itself costs, so the gap
//! between it and hotplex-proxy is what our hooks cost, measured in the same run.
//!
//! Plain HTTP on `--listen`; TLS with HTTP/2 (ALPN h2, http/1.1) on `--tls-listen` when
//! `--cert` and `--key` are given.

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::{HttpPeer, Result, Session};
use pingora::proxy::ProxyHttp;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Header carrying the API key.
const API_KEY_HEADER: &str = "x-api-key";
/// Header whose value picks the upstream.
const SESSION_HEADER: &str = "x-hotplex-session";

#[derive(Parser, Debug)]
#[command(about = "Minimal pingora proxy: the framework floor of benches/load_bench.sh")]
struct Args {
    /// Plain HTTP listener.
    #[arg(long)]
    listen: SocketAddr,
    /// TLS listener (needs --cert and --key).
    #[arg(long, requires_all = ["cert", "key"])]
    tls_listen: Option<SocketAddr>,
    /// PEM certificate of the TLS listener.
    #[arg(long)]
    cert: Option<String>,
    /// PEM private key of the TLS listener.
    #[arg(long)]
    key: Option<String>,
    /// Upstream `ip:port` (repeat for several).
    #[arg(long = "upstream", required = true)]
    upstreams: Vec<SocketAddr>,
    /// The one accepted API key.
    #[arg(long)]
    api_key: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

struct Min {
    upstreams: Vec<SocketAddr>,
    api_key: String,
}

/// FNV-1a: a stable hash of the session header (any stable hash does).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[async_trait]
impl ProxyHttp for Min {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let ok = session
            .req_header()
            .headers
            .get(API_KEY_HEADER)
            .is_some_and(|v| v.as_bytes() == self.api_key.as_bytes());
        if ok {
            return Ok(false);
        }
        session.respond_error(401).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let key = session
            .req_header()
            .headers
            .get(SESSION_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // `upstreams` is non-empty (clap: required).
        let i = (fnv1a(key) % self.upstreams.len() as u64) as usize;
        Ok(Box::new(HttpPeer::new(
            self.upstreams[i],
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        // Exit at once on SIGTERM (pingora's default grace period is 5 minutes).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Min {
            upstreams: args.upstreams,
            api_key: args.api_key,
        },
    );
    proxy.add_tcp(&args.listen.to_string());
    if let (Some(addr), Some(cert), Some(key)) = (args.tls_listen, args.cert, args.key) {
        let mut tls = match TlsSettings::intermediate(&cert, &key) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("pingora-min: TLS settings from {cert} / {key}: {e}");
                std::process::exit(1);
            }
        };
        tls.enable_h2();
        proxy.add_tls_with_settings(&addr.to_string(), None, tls);
    }
    server.add_service(proxy);
    server.run_forever();
}

#[cfg(test)]
mod tests {
    use super::fnv1a;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
