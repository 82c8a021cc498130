//! Heap profiling through jemalloc (`GET /debug/pprof/heap` on the worker's API and the
//! proxy's admin listener).
//!
//! The binaries' `malloc_conf` static builds profiling in but leaves sampling off: an
//! active profiler takes a stack backtrace every 512 KiB allocated on average, which cost
//! the proxy 7% of its instructions per request (benches/RESULTS.md). To profile, start the
//! process with `MALLOC_CONF=prof_active:true` (jemalloc reads the variable after the
//! built-in options). The profile is a gzipped pprof protobuf (`go tool pprof` / `pprof`
//! read it). Without profiling (not active, or a test harness) the endpoint answers 503.

/// The `malloc_conf` value both binaries (and their e2e launchers) export: profiling built
/// in but inactive (see the module docs), sampling every 2^19 bytes once activated, and
/// thread caches for allocations up to 128 KiB (pingora allocates a 64 KiB body buffer per
/// proxied response; cached, it costs a list pop instead of an extent allocation).
pub const MALLOC_CONF: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:19,tcache_max:131072\0";

/// The environment setting that turns heap profiling on at start.
pub const ACTIVATE_ENV: (&str, &str) = ("MALLOC_CONF", "prof_active:true");

/// Headers of a profile download.
pub const PROFILE_HEADERS: [(http::HeaderName, &str); 2] = [
    (http::header::CONTENT_TYPE, "application/octet-stream"),
    (
        http::header::CONTENT_DISPOSITION,
        "attachment; filename=\"heap.pb.gz\"",
    ),
];

/// Why no profile could be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("jemalloc heap profiling is not enabled in this process")]
    NotEnabled,
    #[error("heap profiling is not active: start the process with MALLOC_CONF=prof_active:true")]
    NotActive,
    #[error("dumping the heap profile failed: {0}")]
    Dump(String),
}

impl ProfileError {
    /// HTTP status and JSON `error` code of the answer.
    pub fn status_and_code(&self) -> (http::StatusCode, &'static str) {
        match self {
            ProfileError::Dump(_) => (http::StatusCode::INTERNAL_SERVER_ERROR, "profile_failed"),
            _ => (http::StatusCode::SERVICE_UNAVAILABLE, "profiling_disabled"),
        }
    }
}

/// Takes a heap profile in pprof format (gzipped protobuf).
pub async fn heap_profile() -> Result<Vec<u8>, ProfileError> {
    let ctl = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or(ProfileError::NotEnabled)?;
    let mut ctl = ctl.lock().await;
    if !ctl.activated() {
        return Err(ProfileError::NotActive);
    }
    ctl.dump_pprof()
        .map_err(|e| ProfileError::Dump(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_conf_is_nul_terminated() {
        assert_eq!(MALLOC_CONF.last(), Some(&0));
        assert!(std::str::from_utf8(&MALLOC_CONF[..MALLOC_CONF.len() - 1])
            .is_ok_and(|s| s.contains("prof:true") && s.contains("prof_active:false")));
    }

    #[tokio::test]
    async fn unit_test_process_has_no_profiling() {
        // The test harness does not export malloc_conf, so profiling is off.
        let e = heap_profile().await.expect_err("no profiling here");
        assert_eq!(e.status_and_code().0, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            ProfileError::Dump("x".into()).status_and_code(),
            (http::StatusCode::INTERNAL_SERVER_ERROR, "profile_failed")
        );
    }
}
