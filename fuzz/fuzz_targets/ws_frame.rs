//! The worker's WebSocket client-frame and agent-line parsers never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = serde_json::from_str::<hotplex_worker::ws::ClientFrame>(text);
        let _ = hotplex_worker::agent::parse_line(text);
        let _ = hotplex_common::SessionId::parse(text);
    }
});
