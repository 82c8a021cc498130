//! `routes[].allow` / `routes[].deny`: CIDR lists (IPv4 and IPv6) evaluated on the real
//! client IP ([`crate::security::client_ip`]: the TCP peer, or the right-most untrusted
//! `X-Forwarded-For` entry when the peer is in `limits.trusted_proxies`).
//!
//! Order: **deny, then allow**. A client in any `deny` entry is refused; otherwise, when
//! `allow` is given, only a client in some `allow` entry passes; without `allow` everyone
//! else passes. A request whose client IP is unknown (not an inet peer) is refused when the
//! route has rules (fail closed). Refused: `403 {"error":"ip_denied"}` from the edge
//! ([`crate::errors::EdgeError::IpDenied`]),
//! counted as `hotplex_proxy_rejections_total{reason="ip_denied"}`, nothing forwarded.

use std::net::IpAddr;

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address (full length).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The text of an IP address; IPv4 without the formatting machinery (twice per request).
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if o >= 100 {
                    s.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    s.push(char::from(b'0' + o / 10 % 10));
                }
                s.push(char::from(b'0' + o % 10));
            }
            s
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// The validated `allow` / `deny` lists of one route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl IpRules {
    /// Whether `ip` may use the route (deny, then allow). `None`: unknown client, refused.
    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else {
            return false;
        };
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }

    /// Parses one list (`routes[i].allow` / `.deny`); `Err((j, reason))` names the entry.
    pub fn parse_list(list: &[String]) -> Result<Vec<Cidr>, (usize, String)> {
        list.iter()
            .enumerate()
            .map(|(j, s)| {
                let c = Cidr::parse(s).ok_or_else(|| {
                    (
                        j,
                        format!("{s:?} is not an IP address or CIDR (10.0.0.0/8, ::1/128)"),
                    )
                })?;
                if !is_network(&c) {
                    return Err((
                        j,
                        format!(
                            "{s:?} has host bits set past /{}: write the network address",
                            c.prefix
                        ),
                    ));
                }
                Ok(c)
            })
            .collect()
    }
}

/// Whether `new` may let in an address `old` refused: a deny entry gone, an allow list
/// lifted or given a new entry (entry by entry: a rewrite covering the same addresses
/// differently counts too, on the safe side).
pub fn widens(old: &IpRules, new: Option<&IpRules>) -> bool {
    let Some(new) = new else {
        return true;
    };
    old.deny.iter().any(|d| !new.deny.contains(d))
        || (!old.allow.is_empty()
            && (new.allow.is_empty() || new.allow.iter().any(|a| !old.allow.contains(a))))
}

/// Whether no bit past the prefix is set (`10.0.0.0/8`, not `10.1.0.0/8`).
fn is_network(c: &Cidr) -> bool {
    let host_bits = |width: u32| u32::from(c.prefix) < width;
    match c.addr {
        IpAddr::V4(a) => !host_bits(32) || u32::from(a) & (u32::MAX >> u32::from(c.prefix)) == 0,
        IpAddr::V6(a) => !host_bits(128) || u128::from(a) & (u128::MAX >> u32::from(c.prefix)) == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRules {
        let p = |l: &[&str]| {
            IpRules::parse_list(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("valid")
        };
        IpRules {
            allow: p(allow),
            deny: p(deny),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn deny_then_allow() {
        let r = rules(&["10.0.0.0/8", "::1"], &["10.9.0.0/16"]);
        assert!(r.permits(ip("10.1.2.3")));
        assert!(!r.permits(ip("10.9.0.1")), "deny wins over a wider allow");
        assert!(!r.permits(ip("192.168.1.1")), "not in allow");
        assert!(r.permits(ip("::1")));
        assert!(!r.permits(None), "unknown client: refused");
        let deny_only = rules(&[], &["203.0.113.0/24"]);
        assert!(deny_only.permits(ip("198.51.100.1")));
        assert!(!deny_only.permits(ip("203.0.113.7")));
        // An IPv4-mapped IPv6 peer is matched as IPv4.
        assert!(!deny_only.permits(ip("::ffff:203.0.113.7")));
    }

    #[test]
    fn widening_is_detected() {
        let old = rules(&["10.0.0.0/8"], &["10.9.0.0/16"]);
        assert!(!widens(&old, Some(&old)));
        assert!(!widens(
            &old,
            Some(&rules(&["10.0.0.0/8"], &["10.9.0.0/16", "10.8.0.0/16"]))
        ));
        assert!(widens(&old, None), "rules removed");
        assert!(
            widens(&old, Some(&rules(&["10.0.0.0/8"], &[]))),
            "deny dropped"
        );
        assert!(widens(
            &old,
            Some(&rules(&["10.0.0.0/8", "192.0.2.0/24"], &["10.9.0.0/16"]))
        ));
        assert!(
            widens(&old, Some(&rules(&[], &["10.9.0.0/16"]))),
            "allow lifted"
        );
    }

    #[test]
    fn ipv6_rules_parse_and_match() {
        let r = rules(&["2001:db8::/32", "fe80::1/128"], &["2001:db8:dead::/48"]);
        assert_eq!(r.allow[0].prefix, 32);
        assert_eq!(r.allow[1].prefix, 128);
        assert!(r.permits(ip("2001:db8:1::5")));
        assert!(!r.permits(ip("2001:db8:dead::5")));
        assert!(!r.permits(ip("2001:db9::1")));
        assert!(r.permits(ip("fe80::1")));
        assert!(!r.permits(ip("fe80::2")));
        assert!(!r.permits(ip("10.0.0.1")), "v4 never matches a v6 rule");
        for bad in [
            "2001:db8::/129",
            "2001:db8::g/32",
            "10.0.0.0/33",
            "example.com",
            "",
            "2001:db8::1/32",
        ] {
            let e = IpRules::parse_list(&[bad.to_string()]).expect_err(bad);
            assert_eq!(e.0, 0);
        }
    }

    #[test]
    fn ip_text_matches_display() {
        for o in [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 255] {
            let v4 = IpAddr::from([o, 255 - o, 10, 0]);
            assert_eq!(ip_text(v4), v4.to_string());
        }
        let v6: IpAddr = "2001:db8::1".parse().expect("v6");
        assert_eq!(ip_text(v6), "2001:db8::1");
    }
}
