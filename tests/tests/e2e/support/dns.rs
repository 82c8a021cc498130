//! An in-test DNS server (UDP on 127.0.0.1:0, hand-rolled on hickory-proto, records
//! changed while the test runs) and the helpers of the DNS discovery suites (`proxy_dns`,
//! `worker_identity`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::proxy::{proxy_yaml, send, WAIT};
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::Value;

/// The worker name every test resolves.
pub const NAME: &str = "workers.hotplex.test.";

/// Records served by [`DnsServer`], changeable while it runs.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// A records of [`NAME`].
    pub a: Vec<Ipv4Addr>,
    /// SRV records of [`NAME`]: (port, target host).
    pub srv: Vec<(u16, String)>,
    /// A records of SRV targets.
    pub hosts: BTreeMap<String, Ipv4Addr>,
    /// Put the first SRV target's A record in the additional section.
    pub additional_first: bool,
    /// Answer in reverse order.
    pub reverse: bool,
    /// Answer nothing (a dead name server).
    pub down: bool,
}

/// A UDP DNS responder on 127.0.0.1:0.
pub struct DnsServer {
    pub addr: SocketAddr,
    pub zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("dns name")
}

pub fn answer(req: &Message, zone: &Zone) -> Message {
    let mut resp = Message::response(req.metadata.id, OpCode::Query);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    resp.add_queries(req.queries.clone());
    let Some(q) = req.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    let qname = q.name();
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    if qname.eq_ignore_root_case(&name(NAME)) {
        match q.query_type() {
            RecordType::A => {
                for ip in &zone.a {
                    answers.push(Record::from_rdata(qname.clone(), 1, RData::A(A(*ip))));
                }
            }
            RecordType::SRV => {
                for (i, (port, target)) in zone.srv.iter().enumerate() {
                    let srv = SRV::new(0, 10, *port, name(target));
                    answers.push(Record::from_rdata(qname.clone(), 1, RData::SRV(srv)));
                    if i == 0 && zone.additional_first {
                        if let Some(ip) = zone.hosts.get(target) {
                            additionals.push(Record::from_rdata(name(target), 1, RData::A(A(*ip))));
                        }
                    }
                }
            }
            _ => {} // NOERROR, no data (AAAA)
        }
    } else if let Some((_, ip)) = zone
        .hosts
        .iter()
        .find(|(h, _)| name(h).eq_ignore_root_case(qname))
    {
        if q.query_type() == RecordType::A {
            answers.push(Record::from_rdata(qname.clone(), 1, RData::A(A(*ip))));
        }
    } else {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    if zone.reverse {
        answers.reverse();
    }
    resp.add_answers(answers);
    resp.add_additionals(additionals);
    resp
}

impl DnsServer {
    pub async fn start(zone: Zone) -> DnsServer {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind dns 127.0.0.1:0");
        let addr = sock.local_addr().expect("dns addr");
        let zone = Arc::new(Mutex::new(zone));
        let queries = Arc::new(AtomicU64::new(0));
        let (z, qn) = (zone.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                qn.fetch_add(1, Ordering::Relaxed);
                let zone = z.lock().expect("zone").clone();
                if zone.down {
                    continue;
                }
                if let Ok(bytes) = answer(&req, &zone).to_vec() {
                    let _ = sock.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer {
            addr,
            zone,
            queries,
            task,
        }
    }

    pub fn update(&self, f: impl FnOnce(&mut Zone)) {
        f(&mut self.zone.lock().expect("zone"));
    }

    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

/// A port free on every one of `ips` (workers with one port on several loopback IPs).
pub fn shared_port(ips: &[Ipv4Addr]) -> u16 {
    for _ in 0..200 {
        let first = std::net::TcpListener::bind((ips[0], 0)).expect("bind loopback ip");
        let port = first.local_addr().expect("addr").port();
        let rest: Vec<_> = ips[1..]
            .iter()
            .map(|ip| std::net::TcpListener::bind((*ip, port)))
            .collect();
        if rest.iter().all(|r| r.is_ok()) {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

pub fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Proxy config discovering workers by DNS only (no `workers:`), fast health checks.
pub fn dns_proxy_yaml(dns: &DnsServer, record: &str, port: Option<u16>, grace: &str) -> String {
    let port = port.map(|p| format!("    port: {p}\n")).unwrap_or_default();
    let extra = format!(
        "discovery:\n  dns:\n    name: {NAME}\n    record: {record}\n{port}    interval: 200ms\n    timeout: 500ms\n    resolver: \"{}\"\nworkers_removal_grace: {grace}\n",
        dns.addr
    );
    proxy_yaml(&[], &extra).replacen("workers:\n", "", 1)
}

/// Waits until `/admin/workers` lists exactly `want` (id → state).
pub async fn wait_workers(c: &reqwest::Client, admin: &str, want: &[(&str, &str)]) -> Value {
    let want: BTreeMap<String, String> = want
        .iter()
        .map(|(i, s)| (i.to_string(), s.to_string()))
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let all = admin_get(c, admin, "/admin/workers").await;
        let got: BTreeMap<String, String> = all["workers"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|w| {
                        (
                            w["id"].as_str().unwrap_or("").to_string(),
                            w["state"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if got == want {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "workers never became {want:?}; last: {all}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET `path` on the admin listener, as JSON.
pub async fn admin_get(c: &reqwest::Client, admin: &str, path: &str) -> Value {
    send(c.get(format!("{admin}{path}"))).await.body
}
