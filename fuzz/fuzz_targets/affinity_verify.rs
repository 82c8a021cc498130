//! Affinity-token verification: never panics; arbitrary input never verifies, and a
//! genuine token changed in any way never verifies.
#![no_main]
use hotplex_proxy::routing::affinity::Signer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let signer = Signer::new(vec![b"fuzz-secret-0123456789".to_vec()]);
    let s = String::from_utf8_lossy(data);
    assert!(signer.verify(&s).is_none(), "forged token accepted: {s:?}");
    if let Some((&first, rest)) = data.split_first() {
        let genuine = signer.mint_session("w1").into_string();
        let mut m = genuine.clone().into_bytes();
        let i = usize::from(first) % m.len();
        m.splice(i..i + 1, rest.iter().copied().take(4));
        if let Ok(m) = String::from_utf8(m) {
            if m != genuine {
                assert!(signer.verify(&m).is_none(), "tampered token accepted: {m:?}");
            }
        }
    }
});
