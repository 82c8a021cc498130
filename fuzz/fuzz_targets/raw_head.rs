//! Raw HTTP/1 head check: never panics; a reported anomaly points at the byte it names.
#![no_main]
use hotplex_proxy::hostile::{check_line_endings, HeadAnomaly};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match check_line_endings(data) {
        Ok(()) => {
            for (i, &b) in data.iter().enumerate() {
                assert_ne!(b, 0);
                if b == b'\n' {
                    assert!(i > 0 && data[i - 1] == b'\r');
                }
                if b == b'\r' {
                    assert_eq!(data.get(i + 1), Some(&b'\n'));
                }
            }
        }
        Err(HeadAnomaly::BareLf { at }) => assert_eq!(data[at], b'\n'),
        Err(HeadAnomaly::BareCr { at }) => assert_eq!(data[at], b'\r'),
        Err(HeadAnomaly::Nul { at }) => assert_eq!(data[at], 0),
        Err(HeadAnomaly::MissingHost) => unreachable!(),
    }
});
