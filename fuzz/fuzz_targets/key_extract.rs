//! Routing-key extraction: never panics, only yields valid session ids.
#![no_main]
use hotplex_proxy::config::KeySource;
use hotplex_proxy::routing::key::{extract, KeyInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split the input into path / query / header / cookie on 0xFF separators.
    let mut parts = data.split(|&b| b == 0xff);
    let path = parts.next().unwrap_or_default();
    let query = parts.next();
    let header = parts.next();
    let cookie = parts.next().unwrap_or_default();
    let cookies = [cookie];
    let input = KeyInput { path, query, header, cookies: &cookies };
    let all = [KeySource::Path, KeySource::Query, KeySource::Header, KeySource::Cookie];
    if let Ok(Some(k)) = extract(&all, &input) {
        let s = k.key.as_str();
        assert!((1..=128).contains(&s.len()));
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)));
    }
});
