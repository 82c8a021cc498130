//! What a reload may not do silently: switch protection off. And what every reload tells
//! the audit log: the diff of the security-relevant keys.
//!
//! A reload that turns `auth` off, removes every API key and JWT setting, removes a rate
//! or concurrency limit, lifts `limits.max_body_bytes` to unlimited, or drops the admin
//! tokens or the worker key, or starts accepting identity proofs made for another address
//! (`worker_auth.allow_address_translation`), or serves a new (or changed) route with
//! `auth: off` while auth is on, or drops or widens a route's `allow`/`deny`, is refused unless the new file says so with
//! `allow_security_downgrade: true` (a route whose auth goes from `required` to `optional`
//! or `off`, or from `optional` to `off`, counts as a new anonymous route; turning auth off also passes with
//! `auth.allow_anonymous: true`). A half-written file (cut before its `auth:` or `limits:`
//! section) therefore never applies: it reads as a downgrade. Set the key for the one
//! reload that means it, then remove it.

use super::{ConfigError, RuntimeConfig};

/// Security-relevant facts of a config, comparable across reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Facts {
    auth: bool,
    keys: Vec<String>,
    jwt: bool,
    limits: Vec<&'static str>,
    max_body: u64,
    streamed_bodies: bool,
    admin_tokens: usize,
    worker_key: bool,
    address_translation: bool,
    trusted_proxies: usize,
    /// Routes that serve anonymous clients (`routes[].auth: off` or `optional`).
    public_routes: Vec<(String, super::runtime::routes::AuthMode)>,
}

fn facts(c: &RuntimeConfig) -> Facts {
    let l = &c.limits;
    let mut limits = Vec::new();
    for (name, on) in [
        ("per_ip", l.per_ip.is_some()),
        ("per_key", l.per_key.is_some()),
        ("routes", !l.routes.is_empty()),
        (
            "new_sessions_per_minute",
            l.new_sessions_per_minute.is_some(),
        ),
        ("max_websockets_per_key", l.max_websockets_per_key.is_some()),
        ("max_connections", l.max_connections > 0),
        ("max_connections_per_ip", l.max_connections_per_ip.is_some()),
    ] {
        if on {
            limits.push(name);
        }
    }
    Facts {
        auth: c.auth.enabled,
        keys: c.auth.keys.iter().map(|k| k.name.clone()).collect(),
        jwt: c.auth.jwt.is_some(),
        limits,
        max_body: c.limits.max_body_bytes,
        streamed_bodies: c.limits.allow_streamed_bodies,
        admin_tokens: c.admin_tokens.len(),
        worker_key: c.worker_key.is_some(),
        address_translation: c.worker_address_translation,
        trusted_proxies: c.limits.trusted_proxies.len(),
        public_routes: c
            .routes
            .public_routes()
            .into_iter()
            .map(|r| (r.1, r.2))
            .collect(),
    }
}

/// Refuses a reload from `old` to `new` that switches protection off without
/// `allow_security_downgrade: true` in the new file.
pub fn check(old: &RuntimeConfig, new: &RuntimeConfig) -> Result<(), ConfigError> {
    if new.allow_security_downgrade {
        return Ok(());
    }
    let (o, n) = (facts(old), facts(new));
    let refuse = |key: &str, what: String| {
        Err(ConfigError::new(
            &new.source,
            key,
            format!("{what}: refused as a security downgrade (a half-written file reads the same); set allow_security_downgrade: true in the new file for this one reload if it is meant"),
        ))
    };
    if o.auth && !n.auth && !new.auth.allow_anonymous {
        return refuse("auth.enabled", "the reload turns authentication off".into());
    }
    if (!o.keys.is_empty() || o.jwt) && n.keys.is_empty() && !n.jwt && !new.auth.allow_anonymous {
        return refuse(
            "auth.keys",
            "the reload removes every API key and JWT setting".into(),
        );
    }
    if let Some(gone) = o.limits.iter().find(|l| !n.limits.contains(l)) {
        return refuse(
            &format!("limits.{gone}"),
            format!("the reload removes limits.{gone}"),
        );
    }
    if o.max_body > 0 && n.max_body == 0 {
        return refuse(
            "limits.max_body_bytes",
            "the reload lifts the body limit".into(),
        );
    }
    if !o.streamed_bodies && n.streamed_bodies {
        return refuse(
            "limits.allow_streamed_bodies",
            "the reload lets bodies reach workers before they are complete".into(),
        );
    }
    if o.admin_tokens > 0 && n.admin_tokens == 0 {
        return refuse(
            "admin.tokens",
            "the reload removes every admin token".into(),
        );
    }
    if o.worker_key && !n.worker_key {
        return refuse(
            "worker_auth.key",
            "the reload removes the worker key".into(),
        );
    }
    if !o.address_translation && n.address_translation {
        return refuse(
            "worker_auth.allow_address_translation",
            "the reload stops checking that identity proofs name the address dialled".into(),
        );
    }
    // A new or widened `auth: off` or `optional` route, or one whose auth got weaker
    // (required -> optional -> off), opens a path to anonymous clients.
    use super::runtime::routes::AuthMode;
    let opened = new.routes.public_routes().into_iter().find(|(_, r, mode)| {
        !o.public_routes
            .iter()
            .any(|(d, m)| d == r && (m == mode || *m == AuthMode::Off))
    });
    if let (true, Some((i, r, mode))) = (n.auth, opened) {
        let what = match mode {
            AuthMode::Optional => "with optional authentication (anonymous clients pass)",
            _ => "without authentication",
        };
        return refuse(
            &format!("routes[{i}].auth"),
            format!("the reload serves a route {what} ({r})"),
        );
    }
    // A route's IP rules (issue #19 policies) dropped or widened opens it to more clients.
    if let Some((key, what)) = ip_widened(&old.routes.routes, &new.routes.routes) {
        return refuse(&key, what);
    }
    Ok(())
}

/// The security-relevant differences, for the audit line of a reload (`""`: none).
pub fn diff(old: &RuntimeConfig, new: &RuntimeConfig) -> String {
    let (o, n) = (facts(old), facts(new));
    let mut out = Vec::new();
    if o.auth != n.auth {
        out.push(format!("auth.enabled {} -> {}", o.auth, n.auth));
    }
    let added: Vec<&String> = n.keys.iter().filter(|k| !o.keys.contains(k)).collect();
    let removed: Vec<&String> = o.keys.iter().filter(|k| !n.keys.contains(k)).collect();
    if !added.is_empty() {
        out.push(format!("auth.keys added {added:?}"));
    }
    if !removed.is_empty() {
        out.push(format!("auth.keys removed {removed:?}"));
    }
    if o.jwt != n.jwt {
        out.push(format!("auth.jwt {} -> {}", o.jwt, n.jwt));
    }
    if o.limits != n.limits {
        out.push(format!("limits {:?} -> {:?}", o.limits, n.limits));
    }
    if o.max_body != n.max_body {
        out.push(format!(
            "limits.max_body_bytes {} -> {}",
            o.max_body, n.max_body
        ));
    }
    if o.streamed_bodies != n.streamed_bodies {
        out.push(format!(
            "limits.allow_streamed_bodies {} -> {}",
            o.streamed_bodies, n.streamed_bodies
        ));
    }
    if o.admin_tokens != n.admin_tokens {
        out.push(format!(
            "admin.tokens {} -> {}",
            o.admin_tokens, n.admin_tokens
        ));
    }
    if o.worker_key != n.worker_key {
        out.push(format!(
            "worker_auth.key {} -> {}",
            o.worker_key, n.worker_key
        ));
    }
    if o.address_translation != n.address_translation {
        out.push(format!(
            "worker_auth.allow_address_translation {} -> {}",
            o.address_translation, n.address_translation
        ));
    }
    if o.public_routes != n.public_routes {
        out.push(format!(
            "routes with auth: off or optional {:?} -> {:?}",
            o.public_routes, n.public_routes
        ));
    }
    if let Some((_, what)) = ip_widened(&old.routes.routes, &new.routes.routes) {
        out.push(what);
    }
    if o.trusted_proxies != n.trusted_proxies {
        out.push(format!(
            "limits.trusted_proxies {} -> {} entries",
            o.trusted_proxies, n.trusted_proxies
        ));
    }
    out.join("; ")
}

/// The first route with IP rules in `old` that a reload
/// to `new` opens, as (key path, what). A route of that name that is gone counts (its
/// requests fall through to another route). Here, not in `policy::ip`, so that `policy`
/// does not import `routes`.
fn ip_widened(
    old: &[super::runtime::routes::Route],
    new: &[super::runtime::routes::Route],
) -> Option<(String, String)> {
    for o in old {
        let Some(rules) = &o.policy.ip else {
            continue;
        };
        match new.iter().position(|n| n.name == o.name) {
            None => {
                return Some((
                    "routes".into(),
                    format!(
                        "the reload removes route {:?} and its allow/deny rules",
                        o.name
                    ),
                ))
            }
            Some(i) if crate::policy::ip::widens(rules, new[i].policy.ip.as_ref()) => {
                return Some((
                    format!("routes[{i}].allow"),
                    format!(
                        "the reload widens the allow/deny rules of route {:?}",
                        o.name
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> RuntimeConfig {
        let y = format!("workers:\n  - id: w1\n    address: 127.0.0.1:9001\n{extra}");
        crate::config::parse("t.yaml", &y).expect("valid")
    }

    const AUTH: &str = "auth:\n  enabled: true\n  keys:\n    - name: a\n      hash: \"sha256:7e9f8fd111802be56c379d597842e29b2cebd35ff2133d431a49fa556a18704e\"\n";

    #[test]
    fn downgrades_need_the_explicit_key() {
        let old = cfg(&format!(
            "{AUTH}limits:\n  per_ip: {{rate: 5, burst: 10}}\n"
        ));
        // A file cut before its auth: section.
        let cut = cfg("");
        let e = check(&old, &cut).expect_err("auth off");
        assert_eq!(e.key, "auth.enabled");
        assert!(e.reason.contains("allow_security_downgrade"), "{e}");
        // Auth kept, a limit dropped.
        let e = check(&old, &cfg(AUTH)).expect_err("limit gone");
        assert_eq!(e.key, "limits.per_ip");
        // Said explicitly: applied.
        assert!(check(&old, &cfg("allow_security_downgrade: true\n")).is_ok());
        assert!(check(
            &old,
            &cfg("auth:\n  allow_anonymous: true\nlimits:\n  per_ip: {rate: 5, burst: 10}\n")
        )
        .is_ok());
        // Letting bodies reach workers before they are complete.
        let streamed = cfg(&format!(
            "{AUTH}limits:\n  per_ip: {{rate: 5, burst: 10}}\n  allow_streamed_bodies: true\n  max_body_bytes: 1048576\n"
        ));
        let e = check(&old, &streamed).expect_err("streamed bodies");
        assert_eq!(e.key, "limits.allow_streamed_bodies");
        assert!(diff(&old, &streamed).contains("limits.allow_streamed_bodies false -> true"));
        // Accepting relayed identity proofs.
        let nat = cfg(&format!(
            "{AUTH}limits:\n  per_ip: {{rate: 5, burst: 10}}\nworker_auth:\n  allow_address_translation: true\n"
        ));
        let e = check(&old, &nat).expect_err("address translation");
        assert_eq!(e.key, "worker_auth.allow_address_translation");
        assert!(diff(&old, &nat).contains("worker_auth.allow_address_translation false -> true"));
        assert!(check(&nat, &old).is_ok());
        // Tightening is always fine, and so is an unchanged config.
        assert!(check(&streamed, &old).is_ok());
        assert!(check(&cut, &old).is_ok());
        assert!(check(&old, &old).is_ok());
    }

    #[test]
    fn weaker_route_auth_is_a_downgrade() {
        let route = |auth: &str| {
            cfg(&format!(
                "{AUTH}pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:9002\"]\n\
                 routes:\n  - name: ui\n    path: /ui\n    pool: ui\n    auth: {auth}\n"
            ))
        };
        let (required, optional, off) = (route("required"), route("optional"), route("off"));
        for (from, to, what) in [
            (&required, &optional, "optional authentication"),
            (&required, &off, "without authentication"),
            (&optional, &off, "without authentication"),
        ] {
            let e = check(from, to).expect_err(what);
            assert_eq!(e.key, "routes[0].auth");
            assert!(e.reason.contains(what), "{e}");
        }
        assert!(diff(&required, &optional).contains("routes with auth: off or optional"));
        // Stronger, or unchanged: applied.
        for (from, to) in [
            (&optional, &required),
            (&off, &optional),
            (&off, &required),
            (&optional, &optional),
        ] {
            assert!(check(from, to).is_ok());
        }
    }

    #[test]
    fn the_diff_names_security_keys() {
        let old = cfg(AUTH);
        let new = cfg("allow_security_downgrade: true\nlimits:\n  per_key: {rate: 1, burst: 1}\n");
        let d = diff(&old, &new);
        assert!(d.contains("auth.enabled true -> false"), "{d}");
        assert!(d.contains("auth.keys removed [\"a\"]"), "{d}");
        assert!(d.contains("per_key"), "{d}");
        assert_eq!(diff(&old, &old), "");
    }
}
