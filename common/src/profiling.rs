//! Heap profiling through jemalloc (`GET /debug/pprof/heap` on the worker's API and the
//! proxy's admin listener).
//!
//! Both binaries build profiling in and sample one allocation every 2^19 bytes (512 KiB,
//! Go's pprof default) on average. They differ in whether sampling starts active:
//!
//! - the worker samples from the start ([`MALLOC_CONF_WORKER`]): `/debug/pprof/heap` works
//!   out of the box. A worker allocates little per request next to its agents, so the
//!   backtraces cost it next to nothing.
//! - the proxy starts inactive ([`MALLOC_CONF_PROXY`]): at 512 KiB an active profiler took
//!   a backtrace every ~4.5 proxied requests (pingora allocates a 64 KiB body buffer per
//!   response), +8.8% instructions per request (benches/RESULTS.md, issue #20). An
//!   operator switches it on at runtime from the admin API (`POST /admin/profiling`,
//!   [`set_active`]), takes profiles, and switches it off again; no restart.
//!
//! `MALLOC_CONF` in the environment still overrides either default (jemalloc reads it
//! after the built-in options), e.g. `MALLOC_CONF=prof_active:false` or a finer
//! `lg_prof_sample`. The profile is a gzipped pprof protobuf (`go tool pprof` / `pprof`
//! read it). Without profiling (inactive, or a test harness) the endpoint answers 503.

/// Built-in options of both binaries: profiling built in, sampling every 2^19 bytes once
/// active, and thread caches for allocations up to 128 KiB (pingora allocates a 64 KiB body
/// buffer per proxied response; cached, it costs a list pop instead of an extent allocation).
macro_rules! malloc_conf {
    ($active:literal) => {
        concat!(
            "prof:true,prof_active:",
            $active,
            ",lg_prof_sample:19,tcache_max:131072\0"
        )
        .as_bytes()
    };
}

/// The worker's `malloc_conf` (its binary and its e2e launcher): sampling active from the start.
pub const MALLOC_CONF_WORKER: &[u8] = malloc_conf!("true");

/// The proxy's `malloc_conf` (its binary and its e2e launcher): sampling built in but
/// inactive until `POST /admin/profiling {"active": true}` (see the module docs).
pub const MALLOC_CONF_PROXY: &[u8] = malloc_conf!("false");

/// The environment setting that turns heap profiling on at start (either binary).
pub const ACTIVATE_ENV: (&str, &str) = ("MALLOC_CONF", "prof_active:true");

/// Profiling state of this process: `enabled` (built in and readable), `active` (sampling),
/// `lg_sample` (log2 of the mean bytes between samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub enabled: bool,
    pub active: bool,
    pub lg_sample: Option<u64>,
}

/// The current profiling state.
pub async fn status() -> Status {
    match jemalloc_pprof::PROF_CTL.as_ref() {
        None => Status {
            enabled: false,
            active: false,
            lg_sample: None,
        },
        Some(ctl) => {
            let ctl = ctl.lock().await;
            Status {
                enabled: true,
                active: ctl.activated(),
                lg_sample: Some(ctl.lg_sample() as u64),
            }
        }
    }
}

/// Starts or stops sampling at runtime (jemalloc `prof.active`). Allocations made while
/// inactive are not in later profiles.
pub async fn set_active(active: bool) -> Result<Status, ProfileError> {
    let ctl = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or(ProfileError::NotEnabled)?;
    {
        let mut ctl = ctl.lock().await;
        let r = if active {
            ctl.activate()
        } else {
            ctl.deactivate()
        };
        r.map_err(|e| ProfileError::Control(e.to_string()))?;
    }
    Ok(status().await)
}

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
    #[error("heap profiling is not active: switch it on with POST /admin/profiling {{\"active\": true}} (proxy admin listener) or start the process with MALLOC_CONF=prof_active:true")]
    NotActive,
    #[error("switching heap profiling failed: {0}")]
    Control(String),
    #[error("dumping the heap profile failed: {0}")]
    Dump(String),
}

impl ProfileError {
    /// HTTP status and JSON `error` code of the answer.
    pub fn status_and_code(&self) -> (http::StatusCode, &'static str) {
        match self {
            ProfileError::Dump(_) | ProfileError::Control(_) => {
                (http::StatusCode::INTERNAL_SERVER_ERROR, "profile_failed")
            }
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
        for (conf, active) in [(MALLOC_CONF_WORKER, true), (MALLOC_CONF_PROXY, false)] {
            assert_eq!(conf.last(), Some(&0));
            assert_eq!(conf.iter().filter(|b| **b == 0).count(), 1);
            let s = std::str::from_utf8(&conf[..conf.len() - 1]).expect("ASCII");
            assert!(
                s.contains("prof:true") && s.contains("lg_prof_sample:19"),
                "{s}"
            );
            assert!(s.contains(&format!("prof_active:{active}")), "{s}");
        }
    }

    #[tokio::test]
    async fn unit_test_process_has_no_profiling() {
        // The test harness does not export malloc_conf, so profiling is off.
        let e = heap_profile().await.expect_err("no profiling here");
        assert!(!status().await.enabled);
        assert!(set_active(true).await.is_err());
        assert_eq!(e.status_and_code().0, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            ProfileError::Dump("x".into()).status_and_code(),
            (http::StatusCode::INTERNAL_SERVER_ERROR, "profile_failed")
        );
    }
}
