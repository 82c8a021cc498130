//! `routes[].request_headers` / `routes[].response_headers`: header rules of a route, each
//! with `remove` (names), `set` (replace, or add when absent) and `add` (append another
//! value), applied in that order. Values are text with variables: `$client_ip` (after
//! `limits.trusted_proxies`), `$request_id`, `$host` (the request's, without port),
//! `$scheme` (`http`/`https`); `$$` is a literal `$`. Refused at validation: an unknown
//! variable, an invalid header name or value, and the names a rule may never touch: the
//! HotPlex trust headers (`X-Hotplex-*`), hop-by-hop headers and the framing headers.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};

/// Headers no rule may set, add or remove (besides every `x-hotplex-*`).
pub const PROTECTED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
];

/// A value variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    ClientIp,
    RequestId,
    Host,
    Scheme,
}

/// One piece of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Var(Var),
}

/// A parsed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Part>);

/// What the variables expand to for one request.
pub struct Vars<'a> {
    pub client_ip: Option<IpAddr>,
    pub request_id: &'a str,
    pub host: Option<&'a str>,
    pub scheme: &'a str,
}

impl Template {
    /// Parses `value`; `Err` says why.
    pub fn parse(value: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = value;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                text.push('$');
                rest = r;
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            let var = match &rest[..end] {
                "client_ip" => Var::ClientIp,
                "request_id" => Var::RequestId,
                "host" => Var::Host,
                "scheme" => Var::Scheme,
                other => {
                    return Err(format!(
                        "unknown variable ${other} (known: $client_ip, $request_id, $host, $scheme; $$ for a $)"
                    ))
                }
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Var(var));
            rest = &rest[end..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        let literal: String = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Var(_) => "x",
            })
            .collect();
        if HeaderValue::from_str(&literal).is_err() || literal != literal.trim() {
            return Err(format!(
                "{value:?} is not a valid header value (visible ASCII and spaces, no leading or trailing space)"
            ));
        }
        Ok(Template(parts))
    }

    /// The value for one request (`None`: a variable expanded to something no header
    /// value may hold, e.g. an unknown client IP: the rule is skipped).
    pub fn expand(&self, v: &Vars<'_>) -> Option<HeaderValue> {
        if let [Part::Text(t)] = self.0.as_slice() {
            return HeaderValue::from_str(t).ok();
        }
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => s.push_str(t),
                Part::Var(Var::ClientIp) => s.push_str(&super::ip::ip_text(v.client_ip?)),
                Part::Var(Var::RequestId) => s.push_str(v.request_id),
                Part::Var(Var::Host) => s.push_str(v.host?),
                Part::Var(Var::Scheme) => s.push_str(v.scheme),
            }
        }
        HeaderValue::from_str(&s).ok()
    }
}

/// The validated rules of one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
}

/// Parses a rule's header name; `Err` says why.
pub fn rule_name(name: &str) -> Result<HeaderName, String> {
    let n = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if n.as_str().starts_with("x-hotplex-") {
        return Err(format!(
            "{name:?}: the X-Hotplex-* trust headers belong to the edge, no rule may touch them"
        ));
    }
    if PROTECTED_HEADERS.contains(&n.as_str()) {
        return Err(format!(
            "{name:?} is a hop-by-hop or framing header, no rule may touch it"
        ));
    }
    Ok(n)
}

/// Applies `rules` to a request's or answer's headers (the proxy edits pingora's heads as
/// a plain `HeaderMap`, see its `head_map`): remove, then set, then add.
pub fn apply(rules: &HeaderRules, vars: &Vars<'_>, target: &mut http::HeaderMap) {
    for n in &rules.remove {
        target.remove(n);
    }
    for (n, t) in &rules.set {
        if let Some(v) = t.expand(vars) {
            target.insert(n.clone(), v);
        }
    }
    for (n, t) in &rules.add {
        if let Some(v) = t.expand(vars) {
            target.append(n.clone(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            client_ip: Some("2001:db8::7".parse().expect("ip")),
            request_id: "rid-1",
            host: Some("app.example.test"),
            scheme: "https",
        }
    }

    #[test]
    fn variables_expand() {
        let t = Template::parse("$scheme://$host/ from $client_ip ($request_id) costs $$5")
            .expect("valid");
        let v = t.expand(&vars()).expect("value");
        assert_eq!(
            v.to_str().expect("ascii"),
            "https://app.example.test/ from 2001:db8::7 (rid-1) costs $5"
        );
        let plain = Template::parse("DENY").expect("valid");
        assert_eq!(plain.0, vec![Part::Text("DENY".into())]);
        let no_ip = Vars {
            client_ip: None,
            ..vars()
        };
        assert!(Template::parse("$client_ip")
            .expect("valid")
            .expand(&no_ip)
            .is_none());
    }

    #[test]
    fn rules_remove_then_set_then_add() {
        let name = |n: &str| rule_name(n).expect("name");
        let rules = HeaderRules {
            remove: vec![name("x-powered-by")],
            set: vec![(name("x-frame-options"), Template::parse("DENY").expect("t"))],
            add: vec![
                (
                    name("x-frame-options"),
                    Template::parse("SAMEORIGIN").expect("t"),
                ),
                (
                    name("x-client-ip"),
                    Template::parse("$client_ip").expect("t"),
                ),
            ],
        };
        let mut h = http::HeaderMap::new();
        h.insert("x-powered-by", HeaderValue::from_static("php"));
        h.insert("x-frame-options", HeaderValue::from_static("ALLOW"));
        h.append("x-frame-options", HeaderValue::from_static("ALLOW-2"));
        apply(&rules, &vars(), &mut h);
        assert!(h.get("x-powered-by").is_none());
        let frame: Vec<_> = h.get_all("x-frame-options").iter().collect();
        assert_eq!(
            frame,
            ["DENY", "SAMEORIGIN"],
            "set replaced both, add appended"
        );
        assert_eq!(h.get("x-client-ip").expect("ip"), "2001:db8::7");
        let no_ip = Vars {
            client_ip: None,
            ..vars()
        };
        let mut h = http::HeaderMap::new();
        apply(&rules, &no_ip, &mut h);
        assert!(
            h.get("x-client-ip").is_none(),
            "a value without its variable is left out"
        );
    }

    #[test]
    fn bad_values_and_names_are_refused() {
        for bad in ["$nope", "a $Host", "line\nbreak", " lead", "tab\u{7f}"] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "X-Hotplex-Tenant",
            "x-hotplex-anything",
            "Connection",
            "Transfer-Encoding",
            "Upgrade",
            "TE",
            "Content-Length",
            "Host",
            "bad name",
            "",
        ] {
            assert!(rule_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            rule_name("X-Frame-Options").expect("ok").as_str(),
            "x-frame-options"
        );
    }
}
