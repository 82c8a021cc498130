//! Proxy e2e: JWT validation at the edge (`auth.jwt`), against a real proxy and a real
//! worker. Keys are generated here with OpenSSL (EC P-256 for ES256, RSA 2048 for RS256);
//! tokens are signed with the `jsonwebtoken` crate or built by hand for the attacks.
//!
//! Good ES256 / RS256 tokens pass (201 on `POST /sessions`); expired, not yet valid, wrong audience, wrong
//! issuer, foreign key, tampered payload, `alg: none`, HS256 signed with the public key,
//! a missing `exp` and a string `nbf` are refused with a JSON 401 naming the reason, counted
//! in `hotplex_proxy_auth_failures_total{reason}` and written to the audit log; a
//! `routes_claim` restricts routes (403); rate limits are keyed by the JWT tenant (the
//! `sub` claim); a reload re-reads the key file; `check` names a bad key file.

use hotplex_common::names;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::proxy::*;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::{json, Value};

const ISS: &str = "https://idp.hotplex.test";
const AUD: &str = "hotplex-edge";
const API_KEY: &str = "jwt-test-plain-api-key-0123456789";

/// A PEM key pair: (private PKCS#8, public SPKI).
struct Pair {
    private: Vec<u8>,
    public: Vec<u8>,
}

fn ec_pair() -> Pair {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let k = PKey::from_ec_key(EcKey::generate(&group).expect("ec key")).expect("pkey");
    Pair {
        private: k.private_key_to_pem_pkcs8().expect("ec private pem"),
        public: k.public_key_to_pem().expect("ec public pem"),
    }
}

fn rsa_pair() -> Pair {
    let k = PKey::from_rsa(Rsa::generate(2048).expect("rsa key")).expect("pkey");
    Pair {
        private: k.private_key_to_pem_pkcs8().expect("rsa private pem"),
        public: k.public_key_to_pem().expect("rsa public pem"),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": sub, "exp": now() + 600, "iat": now()})
}

fn es256(p: &Pair, c: &Value) -> String {
    let k = EncodingKey::from_ec_pem(&p.private).expect("ec encoding key");
    encode(&Header::new(Algorithm::ES256), c, &k).expect("sign ES256")
}

fn rs256(p: &Pair, c: &Value) -> String {
    let k = EncodingKey::from_rsa_pem(&p.private).expect("rsa encoding key");
    encode(&Header::new(Algorithm::RS256), c, &k).expect("sign RS256")
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn jwt_yaml(workers: &[(&str, SocketAddr)], keys_file: &Path) -> String {
    proxy_yaml(
        workers,
        &format!(
            "auth:\n  enabled: true\n  keys:\n    - name: plain-key\n      hash: \"{}\"\n  jwt:\n    issuer: \"{ISS}\"\n    audience: [\"{AUD}\", other-aud]\n    keys_file: \"{}\"\n    leeway: 5s\n    routes_claim: routes\nlimits:\n  per_key: {{rate: 0.01, burst: 3}}\n",
            key_hash(API_KEY),
            keys_file.display()
        ),
    )
}

/// `GET path` with `Authorization: Bearer token`: (status, body, www-authenticate).
async fn get(
    c: &reqwest::Client,
    p: &LoggedProxy,
    path: &str,
    token: &str,
) -> (u16, Value, String) {
    // `POST /sessions` (create_session) is the declared route every token may try; other
    // paths are read with GET.
    let rb = if path == "/sessions" {
        c.post(format!("{}{path}", p.base()))
    } else {
        c.get(format!("{}{path}", p.base()))
    };
    let r = rb.bearer_auth(token).send().await.expect("request");
    let status = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        www,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_are_validated_at_the_edge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ec, rsa, foreign) = (ec_pair(), rsa_pair(), ec_pair());
    let keys_file = dir.path().join("jwt-keys.pem");
    let mut pem = ec.public.clone();
    pem.extend_from_slice(&rsa.public);
    std::fs::write(&keys_file, &pem).expect("keys file");
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let p = spawn_logged_proxy(
        dir.path(),
        &jwt_yaml(&worker_list(&workers), &keys_file),
        &[],
    )
    .await;
    let c = client();

    // Good tokens, both algorithms, and the API key still works.
    let alice = es256(&ec, &claims("alice"));
    let (s, body, _) = get(&c, &p, "/sessions", &alice).await;
    assert_eq!(s, 201, "ES256: {body}");
    // Again (served from the verified-token cache).
    assert_eq!(get(&c, &p, "/sessions", &alice).await.0, 201);
    let (s, body, _) = get(&c, &p, "/sessions", &rs256(&rsa, &claims("bob"))).await;
    assert_eq!(s, 201, "RS256: {body}");
    let mut aud_list = claims("zoe");
    aud_list["aud"] = json!(["unrelated", "other-aud"]);
    assert_eq!(
        get(&c, &p, "/sessions", &es256(&ec, &aud_list)).await.0,
        201
    );
    assert_eq!(get(&c, &p, "/sessions", API_KEY).await.0, 201);

    // Refused tokens: (name, token, reason).
    let mut expired = claims("x1");
    expired["exp"] = json!(now() - 60);
    let mut early = claims("x2");
    early["nbf"] = json!(now() + 600);
    let mut wrong_aud = claims("x3");
    wrong_aud["aud"] = json!("someone-else");
    let mut wrong_iss = claims("x4");
    wrong_iss["iss"] = json!("https://evil.test");
    let mut no_exp = claims("x5");
    if let Some(o) = no_exp.as_object_mut() {
        o.remove("exp");
    }
    let mut string_nbf = claims("x6");
    string_nbf["nbf"] = json!("99999999999");
    let good = es256(&ec, &claims("mallory"));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims("admin").to_string().as_bytes()),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("root").to_string().as_bytes())
    );
    // Algorithm confusion: HS256 keyed with the server's RSA *public* key.
    let hs256 = encode(
        &Header::new(Algorithm::HS256),
        &claims("root"),
        &EncodingKey::from_secret(&rsa.public),
    )
    .expect("sign HS256");
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", es256(&ec, &expired), "jwt_expired"),
        (
            "nbf in the future",
            rs256(&rsa, &early),
            "jwt_not_yet_valid",
        ),
        ("wrong audience", es256(&ec, &wrong_aud), "jwt_audience"),
        ("wrong issuer", rs256(&rsa, &wrong_iss), "jwt_issuer"),
        (
            "foreign key",
            es256(&foreign, &claims("x7")),
            "jwt_signature",
        ),
        ("tampered payload", tampered, "jwt_signature"),
        ("alg none", alg_none, "jwt_algorithm"),
        ("HS256 with the public key", hs256, "jwt_algorithm"),
        ("no exp", es256(&ec, &no_exp), "jwt_missing_claim"),
        ("string nbf", es256(&ec, &string_nbf), "jwt_malformed"),
    ];
    for (name, token, reason) in &cases {
        let (s, body, www) = get(&c, &p, "/sessions", token).await;
        assert_eq!(s, 401, "{name}: {body}");
        assert_eq!(body["error"], "unauthorized", "{name}: {body}");
        assert_eq!(body["reason"], *reason, "{name}: {body}");
        assert!(www.contains("invalid_token"), "{name}: {www}");
    }
    // Not a JWT and not a key; no credential at all.
    let (s, body, _) = get(&c, &p, "/sessions", "not-a-key").await;
    assert_eq!((s, body["reason"].clone()), (401, json!("invalid_key")));
    let r = c
        .post(format!("{}/sessions", p.base()))
        .send()
        .await
        .expect("no auth");
    assert_eq!(r.status(), 401);

    // routes claim: a token for `session` only gets 403 on the create route.
    let mut scoped = claims("erin");
    scoped["routes"] = json!(["session"]);
    let t = es256(&ec, &scoped);
    let (s, body, _) = get(&c, &p, "/sessions", &t).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["reason"], "forbidden_route");
    let (s, body, _) = get(&c, &p, "/sessions/some-client-id", &t).await;
    assert!(
        s != 401 && s != 403,
        "allowed route passes auth: {s} {body}"
    );

    // Limits are keyed by the JWT tenant: carol's two tokens (ES256, RS256) share one
    // bucket of 3; dave is unaffected.
    let carol = [es256(&ec, &claims("carol")), rs256(&rsa, &claims("carol"))];
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(get(&c, &p, "/sessions", &carol[i % 2]).await.0);
    }
    assert_eq!(statuses, vec![201, 201, 201, 429], "carol's shared bucket");
    assert_eq!(
        get(&c, &p, "/sessions", &es256(&ec, &claims("dave")))
            .await
            .0,
        201
    );
    assert!(metric(&c, &p, names::proxy::RATE_LIMITED, &["key=\"carol\""]).await >= 1.0);

    // Metrics: one failure per reason (two for jwt_signature and jwt_algorithm).
    for (reason, want) in [
        ("jwt_expired", 1.0),
        ("jwt_not_yet_valid", 1.0),
        ("jwt_audience", 1.0),
        ("jwt_issuer", 1.0),
        ("jwt_signature", 2.0),
        ("jwt_algorithm", 2.0),
        ("jwt_missing_claim", 1.0),
        ("jwt_malformed", 1.0),
        ("forbidden_route", 1.0),
    ] {
        let v = metric(
            &c,
            &p,
            names::proxy::AUTH_FAILURES,
            &[&format!("reason=\"{reason}\"")],
        )
        .await;
        assert_eq!(v, want, "auth_failures_total{{reason={reason}}}");
    }
    assert!(metric(&c, &p, names::proxy::REJECTIONS, &["reason=\"auth\""]).await >= 13.0);

    // Audit log: one denied `auth` line per failure, with the reason, never the token.
    let log = p.log();
    let audit: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "audit" && v["action"] == "auth")
        .collect();
    for (_, _, reason) in &cases {
        assert!(
            audit
                .iter()
                .any(|v| v["outcome"] == "denied"
                    && v["detail"].as_str().unwrap_or("").contains(reason)),
            "audit line for {reason}: {audit:?}"
        );
    }
    assert!(!log.contains(&good), "a token never reaches the log");

    // Key rotation: the key file without the EC key, then a reload: ES256 tokens fail.
    std::fs::write(&keys_file, &rsa.public).expect("rotate keys");
    let full = std::fs::read_to_string(&p.config_path).expect("config");
    // ES256 has no key any more: restrict the algorithms accordingly.
    let rotated = full.replace(
        "    routes_claim: routes\n",
        "    routes_claim: routes\n    algorithms: [RS256]\n",
    );
    std::fs::write(&p.config_path, rotated).expect("rewrite config");
    let r = c
        .post(format!("{}/admin/reload", p.admin_base()))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200, "reload: {:?}", r.text().await);
    let (s, body, _) = get(&c, &p, "/sessions", &es256(&ec, &claims("frank"))).await;
    assert_eq!((s, body["reason"].clone()), (401, json!("jwt_algorithm")));
    // A token accepted (and cached) before the reload is refused after it.
    let (s, body, _) = get(&c, &p, "/sessions", &alice).await;
    assert_eq!((s, body["reason"].clone()), (401, json!("jwt_algorithm")));
    assert_eq!(
        get(&c, &p, "/sessions", &rs256(&rsa, &claims("frank")))
            .await
            .0,
        201
    );

    // `check` names a bad key file.
    let bad = dir.path().join("bad.yaml");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .expect("garbage");
    std::fs::write(&bad, jwt_yaml(&worker_list(&workers), &garbage)).expect("bad config");
    let (code, out, err) = check(&bad);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("auth.jwt.keys_file"),
        "{out}{err}"
    );
}
