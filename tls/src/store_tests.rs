use super::*;
use crate::testutil::{config_with, ymd_in_days, TestCa};

#[test]
fn loads_pairs_with_chain_and_selects_by_sni() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let a = ca.leaf(&["a.example.com", "b.example.com"], None);
    let w = ca.leaf(&["*.wild.test"], None);
    let (ac, ak) = a.write(dir.path(), "a", Some(&ca.pem()));
    let (wc, wk) = w.write(dir.path(), "w", None);
    let mut cfg = config_with(&[(&[], &ac, &ak), (&["*.wild.test"], &wc, &wk)]);
    cfg.default_certificate = 1;
    let store = CertStore::from_config(&cfg).expect("loads");
    let set = store.current();
    assert_eq!(set.generation(), 1);
    // Names from SANs when server_names is empty.
    assert_eq!(set.certs()[0].names, ["a.example.com", "b.example.com"]);
    assert_eq!(set.certs()[0].chain.len(), 1);
    assert_eq!(set.certs()[0].fingerprint, a.fingerprint);
    let pick = |s: Option<&str>| set.select(s).fingerprint.clone();
    assert_eq!(pick(Some("a.example.com")), a.fingerprint);
    assert_eq!(pick(Some("B.Example.COM.")), a.fingerprint);
    assert_eq!(pick(Some("x.wild.test")), w.fingerprint);
    assert_eq!(pick(Some("X.WILD.TEST")), w.fingerprint);
    // Wildcards cover exactly one label.
    assert_eq!(pick(Some("deep.x.wild.test")), w.fingerprint); // default is w here
    assert_eq!(pick(Some("wild.test")), w.fingerprint);
    assert_eq!(pick(None), w.fingerprint);
    assert_eq!(pick(Some("unknown.org")), w.fingerprint);
    let s = set.summary();
    assert!(s.certs[1].is_default && !s.dev);
    assert!(s.certs[0].days_left > 365);
    assert!(s
        .to_string()
        .contains("tls.certificates[0] [a.example.com,b.example.com]"));
}

#[test]
fn wildcard_does_not_cover_deeper_names_and_default_is_first() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let d = ca.leaf(&["default.test"], None);
    let w = ca.leaf(&["*.wild.test"], None);
    let (dc, dk) = d.write(dir.path(), "d", None);
    let (wc, wk) = w.write(dir.path(), "w", None);
    let cfg = config_with(&[(&["default.test"], &dc, &dk), (&["*.wild.test"], &wc, &wk)]);
    let set = CertStore::from_config(&cfg).expect("loads").current();
    assert_eq!(set.select(Some("a.wild.test")).fingerprint, w.fingerprint);
    assert_eq!(set.select(Some("a.b.wild.test")).fingerprint, d.fingerprint);
    assert_eq!(set.select(Some("wild.test")).fingerprint, d.fingerprint);
    assert_eq!(set.default_cert().fingerprint, d.fingerprint);
}

#[test]
fn mismatched_key_rejected_and_old_store_kept() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let a = ca.leaf(&["a.test"], None);
    let (c, k) = a.write(dir.path(), "a", None);
    let cfg = config_with(&[(&["a.test"], &c, &k)]);
    let store = CertStore::from_config(&cfg).expect("loads");

    // New cert, key of another cert: mismatch.
    let b = ca.leaf(&["a.test"], None);
    let other = ca.leaf(&["a.test"], None);
    std::fs::write(&c, &b.cert_pem).expect("w");
    std::fs::write(&k, &other.key_pem).expect("w");
    let e = store.reload().expect_err("mismatch");
    let msg = e.to_string();
    assert!(
        msg.contains("tls.certificates[0]") && msg.contains("does not match"),
        "{msg}"
    );
    assert!(msg.contains(&c.display().to_string()), "{msg}");
    assert_eq!(
        store.current().select(Some("a.test")).fingerprint,
        a.fingerprint
    );
    assert_eq!(store.current().generation(), 1);
    let st = store.stats();
    assert_eq!((st.successes, st.failures), (0, 1));
    assert!(st.last_error.is_some());

    // Garbage key file: error names the key field and file.
    std::fs::write(&k, "not a key").expect("w");
    let e = store.reload().expect_err("bad key");
    assert!(matches!(&e, StoreError::File { field: "key", .. }), "{e}");
    assert!(
        e.to_string().starts_with("tls.certificates[0].key ("),
        "{e}"
    );

    // Missing cert file.
    std::fs::remove_file(&c).expect("rm");
    let e = store.reload().expect_err("missing");
    assert!(
        e.to_string().starts_with("tls.certificates[0].cert ("),
        "{e}"
    );
    assert_eq!(store.current().select(None).fingerprint, a.fingerprint);
    assert_eq!(store.stats().failures, 3);

    // Fix it: reload succeeds, generation bumps, counters reset last_error.
    b.write(dir.path(), "a", None);
    let r = store.reload().expect("ok");
    assert!(r.changed);
    assert_eq!(r.summary.generation, 2);
    assert_eq!(store.current().select(None).fingerprint, b.fingerprint);
    let st = store.stats();
    assert_eq!((st.successes, st.last_error), (1, None));
    // Unchanged reload.
    assert!(!store.reload().expect("ok").changed);
}

#[test]
fn initial_load_errors() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let a = ca.leaf(&["a.test"], None);
    let (c, k) = a.write(dir.path(), "a", None);
    std::fs::write(
        &c,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("w");
    let e = CertStore::from_config(&config_with(&[(&[], &c, &k)])).expect_err("bad cert");
    assert!(
        e.to_string().starts_with("tls.certificates[0].cert ("),
        "{e}"
    );
    std::fs::write(&c, "").expect("w");
    let e = CertStore::from_config(&config_with(&[(&[], &c, &k)])).expect_err("empty");
    assert!(e.to_string().contains("tls.certificates[0].cert"), "{e}");
}

#[test]
fn expiry_checks() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let old = ca.leaf(&["old.test"], Some((2020, 1, 1)));
    let (c, k) = old.write(dir.path(), "old", None);
    let e = CertStore::from_config(&config_with(&[(&[], &c, &k)])).expect_err("expired");
    assert!(e.to_string().contains("expired"), "{e}");

    let soon = ca.leaf(&["soon.test"], Some(ymd_in_days(5)));
    let (c, k) = soon.write(dir.path(), "soon", None);
    let store = CertStore::from_config(&config_with(&[(&[], &c, &k)])).expect("loads with warn");
    let d = store.current().summary().certs[0].days_left;
    assert!((3..=5).contains(&d), "days_left {d}");
    assert!(d < EXPIRY_WARN_DAYS);
}

#[test]
fn dev_store_when_no_certificates() {
    let cfg = config_with(&[]);
    let store = CertStore::from_config(&cfg).expect("dev");
    let s = store.current().summary();
    assert!(s.dev);
    assert_eq!(s.certs[0].names, ["localhost"]);
    assert!(store.watched_files().is_empty());
    assert!(!store.reload().expect("noop").changed);

    // Config reload switches from dev to files.
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let a = ca.leaf(&["a.test"], None);
    let (c, k) = a.write(dir.path(), "a", None);
    let r = store
        .reload_with(&config_with(&[(&[], &c, &k)]))
        .expect("switch");
    assert!(r.changed && !r.summary.dev);
    assert_eq!(store.watched_files(), vec![c, k]);
}
