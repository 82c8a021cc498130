use super::*;

fn parse(yaml: &str) -> TlsFile {
    serde_yaml::from_str(yaml).expect("yaml parses")
}

fn err(yaml: &str) -> ConfigError {
    parse(yaml).validate().expect_err("must fail validation")
}

#[test]
fn defaults_are_hardened() {
    let c = parse("{}").validate().expect("valid");
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.min_version, MinVersion::Tls12);
    assert_eq!(c.ciphers, DEFAULT_CIPHERS);
    assert_eq!(c.ciphersuites, DEFAULT_CIPHERSUITES);
    assert!(c.h2);
    assert!(!c.session_tickets);
    assert!(c.certificates.is_empty());
    assert_eq!(c.watch_debounce, Duration::from_millis(500));
    assert!(c.hsts.is_none());
}

#[test]
fn full_config_parses() {
    let c = parse(
        r#"
listen: "127.0.0.1:443"
certificates:
  - { server_names: ["Example.COM", "*.example.com"], cert: a.pem, key: a.key }
  - { server_names: [other.org], cert: b.pem, key: b.key }
default_certificate: other.org
min_version: "1.3"
hsts: { max_age: "365d", include_subdomains: true, preload: true }
redirect_http: "127.0.0.1:80"
h2: false
"#,
    )
    .validate()
    .expect("valid");
    assert_eq!(
        c.certificates[0].server_names,
        ["example.com", "*.example.com"]
    );
    assert_eq!(c.certificates[1].label, "tls.certificates[1]");
    assert_eq!(c.default_certificate, 1);
    assert_eq!(c.min_version, MinVersion::Tls13);
    assert!(!c.h2);
    let h = c.hsts.clone().expect("hsts");
    assert_eq!(
        h.header_value(),
        "max-age=31536000; includeSubDomains; preload"
    );
    assert_eq!(c.watched_files().len(), 4);
}

#[test]
fn hsts_header_variants() {
    let h = Hsts {
        max_age: Duration::from_secs(600),
        include_subdomains: false,
        preload: false,
    };
    assert_eq!(h.header_value(), "max-age=600");
    let c = parse("hsts: { max_age: 86400, include_subdomains: true }")
        .validate()
        .expect("valid");
    assert_eq!(
        c.hsts.expect("hsts").header_value(),
        "max-age=86400; includeSubDomains"
    );
}

#[test]
fn unknown_keys_refused() {
    assert!(serde_yaml::from_str::<TlsFile>("lisen: x").is_err());
    assert!(
        serde_yaml::from_str::<TlsFile>("certificates: [{cert: a, key: b, extra: 1}]").is_err()
    );
    assert!(serde_yaml::from_str::<UpstreamTlsFile>("verfy: true").is_err());
}

#[test]
fn errors_carry_key_paths() {
    let e = err("certificates: [{cert: a, key: b}, {cert: c, key: ''}]");
    assert_eq!(e.path, "tls.certificates[1].key");
    assert!(e
        .to_string()
        .starts_with("tls.certificates[1].key: empty path"));

    let e = err("certificates: [{server_names: ['a.com', 'x.*.com'], cert: a, key: b}]");
    assert_eq!(e.path, "tls.certificates[0].server_names[1]");

    let e = err("certificates: [{server_names: ['a.com'], cert: a, key: b}, {server_names: ['A.com'], cert: c, key: d}]");
    assert_eq!(e.path, "tls.certificates[1].server_names[0]");
    assert!(e.reason.contains("already listed"), "{e}");

    let e = err("certificates: [{server_names: ['*.com'], cert: a, key: b}]");
    assert!(e.reason.contains("two labels"), "{e}");

    let e = err("certificates: [{server_names: ['10.0.0.1'], cert: a, key: b}]");
    assert!(e.reason.contains("IP"), "{e}");

    let e = err(
        "default_certificate: nope.com\ncertificates: [{server_names: ['a.com'], cert: a, key: b}]",
    );
    assert_eq!(e.path, "tls.default_certificate");

    let e = err("min_version: '1.1'");
    assert_eq!(e.path, "tls.min_version");
    assert!(e.reason.contains("refused"), "{e}");
    assert_eq!(err("min_version: '1.0'").path, "tls.min_version");
    assert_eq!(err("min_version: 'tls9'").path, "tls.min_version");

    assert_eq!(err("listen: 'localhost'").path, "tls.listen");
    assert_eq!(err("redirect_http: ':80'").path, "tls.redirect_http");
    assert_eq!(
        err("h2_max_concurrent_streams: 0").path,
        "tls.h2_max_concurrent_streams"
    );
    assert_eq!(
        err("max_header_list_size: 10").path,
        "tls.max_header_list_size"
    );
    assert_eq!(err("watch_debounce_ms: 0").path, "tls.watch_debounce_ms");
    assert_eq!(err("hsts: { max_age: 'soon' }").path, "tls.hsts.max_age");
    assert_eq!(err("hsts: { preload: true }").path, "tls.hsts.preload");
    assert_eq!(
        err("hsts: { max_age: 60, preload: true, include_subdomains: true }").path,
        "tls.hsts.max_age"
    );

    let e = parse("min_version: '1.0'")
        .validate_at("listeners[2].tls")
        .expect_err("fails");
    assert_eq!(e.path, "listeners[2].tls.min_version");
}

#[test]
fn weak_ciphers_refused() {
    for bad in [
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA",
        "AES128-GCM-SHA256",
        "DHE-RSA-AES128-GCM-SHA256",
        "HIGH",
        "ECDHE-RSA-DES-CBC3-SHA",
        "RC4-SHA",
    ] {
        let e = err(&format!("ciphers: '{bad}'"));
        assert_eq!(e.path, "tls.ciphers", "{bad}");
    }
    let e = err("ciphers: 'ECDHE-RSA-AES999-GCM-SHA256'");
    assert!(e.reason.contains("OpenSSL"), "{e}");
    parse("ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384:!aNULL'")
        .validate()
        .expect("valid");
    assert_eq!(
        err("ciphersuites: 'TLS_AES_128_CCM_8_SHA256'").path,
        "tls.ciphersuites"
    );
    assert_eq!(err("ciphersuites: ''").path, "tls.ciphersuites");
}

#[test]
fn upstream_validation() {
    let u: UpstreamTlsFile =
        serde_yaml::from_str("enabled: true\nsni: Worker.internal\ntrust_system_roots: true")
            .expect("yaml");
    let u = u.validate().expect("valid");
    assert!(u.verify);
    assert_eq!(u.sni.as_deref(), Some("worker.internal"));
    assert_eq!(u.name_for("w7"), "worker.internal", "one shared name");
    assert!(u.load_ca().expect("no ca").is_none());

    // Secure by default: no system roots unless asked, one name per worker.
    let u: UpstreamTlsFile = serde_yaml::from_str("enabled: true").expect("yaml");
    let e = u.validate().expect_err("no CA, no opt-in");
    assert_eq!(e.path, "upstream_tls.ca_file");
    assert!(e.reason.contains("trust_system_roots"), "{}", e.reason);
    let u: UpstreamTlsFile =
        serde_yaml::from_str("enabled: true\ntrust_system_roots: true").expect("yaml");
    let u = u.validate().expect("opt-in");
    assert_eq!(u.name_for("w7"), "w7", "default: the node id");
    let u: UpstreamTlsFile = serde_yaml::from_str(
        "enabled: true\ntrust_system_roots: true\nserver_name: \"{id}.Workers.Internal\"",
    )
    .expect("yaml");
    assert_eq!(
        u.validate().expect("pattern").name_for("w7"),
        "w7.workers.internal"
    );
    for bad in ["workers.internal", "{id}.{id}.x", "{id}..x", "*.{id}"] {
        let u: UpstreamTlsFile = serde_yaml::from_str(&format!(
            "enabled: true\ntrust_system_roots: true\nserver_name: \"{bad}\""
        ))
        .expect("yaml");
        assert_eq!(
            u.validate().expect_err(bad).path,
            "upstream_tls.server_name",
            "{bad}"
        );
    }
    let ca = tempfile::NamedTempFile::new().expect("tempfile");
    let u: UpstreamTlsFile = serde_yaml::from_str(&format!(
        "enabled: true\ntrust_system_roots: true\nca_file: \"{}\"",
        ca.path().display()
    ))
    .expect("yaml");
    assert_eq!(
        u.validate().expect_err("both").path,
        "upstream_tls.trust_system_roots"
    );
    let u: UpstreamTlsFile = serde_yaml::from_str(
        "enabled: true\ntrust_system_roots: true\nsni: a.b\nserver_name: \"{id}.b\"",
    )
    .expect("yaml");
    assert_eq!(u.validate().expect_err("both").path, "upstream_tls.sni");

    let u: UpstreamTlsFile =
        serde_yaml::from_str("enabled: true\nca_file: /nonexistent/ca.pem").expect("yaml");
    assert_eq!(
        u.validate().expect_err("missing").path,
        "upstream_tls.ca_file"
    );
    let u: UpstreamTlsFile = serde_yaml::from_str("sni: '*.x.com'").expect("yaml");
    assert_eq!(u.validate().expect_err("wildcard").path, "upstream_tls.sni");
}
