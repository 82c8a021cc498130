//! Heap profiling through jemalloc (`GET /debug/pprof/heap` on the worker's API and the
//! proxy's admin listener).
//!
//! Profiling is switched on at process start by the binaries' `malloc_conf` static
//! (`prof:true,prof_active:true,lg_prof_sample:19`); the profile is a gzipped pprof
//! protobuf (`go tool pprof` / `pprof` read it). In a process where jemalloc profiling
//! is off (e.g. a test harness) the endpoint answers 503.

/// The `malloc_conf` value both binaries (and their e2e launchers) export.
pub const MALLOC_CONF: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";

/// Why no profile could be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("jemalloc heap profiling is not enabled in this process")]
    NotEnabled,
    #[error("heap profiling is not active")]
    NotActive,
    #[error("dumping the heap profile failed: {0}")]
    Dump(String),
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
            .is_ok_and(|s| s.contains("prof:true")));
    }

    #[tokio::test]
    async fn unit_test_process_has_no_profiling() {
        // The test harness does not export malloc_conf, so profiling is off.
        assert!(heap_profile().await.is_err());
    }
}
