//! Certificate store: every cert/key pair loaded and checked, indexed by SNI name,
//! held in an [`ArcSwap`] so a reload swaps the whole set atomically. A failed reload
//! leaves the previous set serving.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;
use sha2::{Digest, Sha256};

use crate::config::{CertSource, TlsConfig};
use crate::load::{load_dev, load_files};

/// Certificates expiring in fewer days than this are loaded with a WARN.
pub const EXPIRY_WARN_DAYS: i64 = 14;

/// Why a certificate set could not be loaded. The previous set keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or parsed.
    #[error("{label}.{field} ({}): {reason}", path.display())]
    File {
        /// Config key of the pair, e.g. `tls.certificates[1]`.
        label: String,
        /// `cert` or `key`.
        field: &'static str,
        /// File path.
        path: PathBuf,
        /// Reason.
        reason: String,
    },
    /// The pair is unusable (key mismatch, expired, ...).
    #[error("{label} ({}): {reason}", path.display())]
    Invalid {
        /// Config key of the pair.
        label: String,
        /// Certificate path.
        path: PathBuf,
        /// Reason.
        reason: String,
    },
    /// The development certificate could not be generated.
    #[error("development certificate: {0}")]
    DevCert(String),
}

/// One loaded, checked certificate with its chain and key.
pub struct LoadedCert {
    /// Config key, e.g. `tls.certificates[0]`.
    pub label: String,
    /// SNI names (lower case; `*.x.y` wildcards) this cert is indexed under.
    pub names: Vec<String>,
    /// Leaf certificate.
    pub leaf: X509,
    /// Intermediates, in file order.
    pub chain: Vec<X509>,
    /// Private key.
    pub key: PKey<Private>,
    /// SHA-256 of the leaf DER, lower-case hex.
    pub fingerprint: String,
    /// `notAfter` as Unix seconds.
    pub not_after_unix: i64,
    /// Whole days until `notAfter` at load time.
    pub days_left: i64,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("label", &self.label)
            .field("names", &self.names)
            .field("fingerprint", &self.fingerprint)
            .field("not_after_unix", &self.not_after_unix)
            .finish_non_exhaustive()
    }
}

/// An immutable, indexed set of certificates (one generation of the store).
#[derive(Debug)]
pub struct CertSet {
    certs: Vec<Arc<LoadedCert>>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    default: usize,
    generation: u64,
    dev: bool,
}

impl CertSet {
    /// `certs` must be non-empty and `default < certs.len()` (callers guarantee it).
    pub(crate) fn new(certs: Vec<LoadedCert>, default: usize, generation: u64, dev: bool) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.names {
                let (map, key) = match n.strip_prefix("*.") {
                    Some(rest) => (&mut wildcard, rest.to_string()),
                    None => (&mut exact, n.clone()),
                };
                map.entry(key).or_insert(i);
            }
        }
        Self {
            certs: certs.into_iter().map(Arc::new).collect(),
            exact,
            wildcard,
            default,
            generation,
            dev,
        }
    }

    /// The certificate for an SNI name: exact match, then `*.parent` wildcard (one label),
    /// then the default certificate. Case-insensitive; a trailing dot is ignored.
    pub fn select(&self, sni: Option<&str>) -> &Arc<LoadedCert> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(&i) = self.exact.get(&name) {
                return &self.certs[i];
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(&i) = self.wildcard.get(parent) {
                    return &self.certs[i];
                }
            }
        }
        &self.certs[self.default]
    }

    /// The default certificate.
    pub fn default_cert(&self) -> &Arc<LoadedCert> {
        &self.certs[self.default]
    }

    /// All certificates.
    pub fn certs(&self) -> &[Arc<LoadedCert>] {
        &self.certs
    }

    /// Generation number (1 for the first load, +1 per successful reload).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// SHA-256 over all leaf fingerprints in order: changes iff any certificate changes.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for c in &self.certs {
            h.update(c.fingerprint.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Summary for logs and metrics.
    pub fn summary(&self) -> StoreSummary {
        StoreSummary {
            generation: self.generation,
            fingerprint: self.fingerprint(),
            dev: self.dev,
            certs: self
                .certs
                .iter()
                .enumerate()
                .map(|(i, c)| CertSummary {
                    label: c.label.clone(),
                    names: c.names.clone(),
                    fingerprint: c.fingerprint.clone(),
                    not_after_unix: c.not_after_unix,
                    days_left: c.days_left,
                    is_default: i == self.default,
                })
                .collect(),
        }
    }
}

/// Per-certificate summary (metrics: `not_after_unix` as an expiry gauge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Config key.
    pub label: String,
    /// Indexed names.
    pub names: Vec<String>,
    /// Leaf SHA-256, hex.
    pub fingerprint: String,
    /// `notAfter`, Unix seconds.
    pub not_after_unix: i64,
    /// Days left at load time.
    pub days_left: i64,
    /// Served when SNI matches nothing.
    pub is_default: bool,
}

/// Store summary for logs (`Display`) and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSummary {
    /// Generation.
    pub generation: u64,
    /// Set fingerprint.
    pub fingerprint: String,
    /// Development certificate in use.
    pub dev: bool,
    /// Certificates.
    pub certs: Vec<CertSummary>,
}

impl fmt::Display for StoreSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "generation={} certs={} fingerprint={}{}",
            self.generation,
            self.certs.len(),
            &self.fingerprint[..16.min(self.fingerprint.len())],
            if self.dev { " DEV-CERT" } else { "" }
        )?;
        for c in &self.certs {
            write!(
                f,
                "; {} [{}] sha256={} expires_in={}d{}",
                c.label,
                c.names.join(","),
                &c.fingerprint[..16.min(c.fingerprint.len())],
                c.days_left,
                if c.is_default { " default" } else { "" }
            )?;
        }
        Ok(())
    }
}

/// Result of a successful (re)load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// False when the files were unchanged (same fingerprints); the set is still swapped.
    pub changed: bool,
    /// The now-serving set.
    pub summary: StoreSummary,
}

/// Reload counters, for the proxy to export as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStats {
    /// Successful reloads (initial load not counted).
    pub successes: u64,
    /// Failed reloads (old set kept).
    pub failures: u64,
    /// Last failure message, if the most recent reload failed.
    pub last_error: Option<String>,
}

enum Sources {
    Files {
        certs: Vec<CertSource>,
        default: usize,
    },
    Dev,
}

/// The live certificate store. Cheap to read from any thread ([`CertStore::current`]).
pub struct CertStore {
    current: ArcSwap<CertSet>,
    sources: Mutex<Sources>,
    successes: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertStore({})", self.current().summary())
    }
}

impl CertStore {
    /// Load the certificates named by `cfg`, or generate the development certificate
    /// (loud WARN) when `cfg.certificates` is empty.
    pub fn from_config(cfg: &TlsConfig) -> Result<Arc<Self>, StoreError> {
        let (set, sources) = if cfg.certificates.is_empty() {
            (load_dev(1)?, Sources::Dev)
        } else {
            let set = load_files(&cfg.certificates, cfg.default_certificate, 1)?;
            let sources = Sources::Files {
                certs: cfg.certificates.clone(),
                default: cfg.default_certificate,
            };
            (set, sources)
        };
        tracing::info!("TLS certificates loaded: {}", set.summary());
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(set),
            sources: Mutex::new(sources),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }))
    }

    /// The currently serving set (a snapshot; later reloads do not change it).
    pub fn current(&self) -> Arc<CertSet> {
        self.current.load_full()
    }

    /// Re-read the same files. On error the old set keeps serving, the failure is counted
    /// and logged, and the error is returned.
    pub fn reload(&self) -> Result<ReloadReport, StoreError> {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let next_gen = self.current.load().generation + 1;
        let res = match &*sources {
            Sources::Files { certs, default } => load_files(certs, *default, next_gen),
            Sources::Dev => {
                return Ok(ReloadReport {
                    changed: false,
                    summary: self.current().summary(),
                })
            }
        };
        self.finish(res)
    }

    /// Switch to the certificate list of a new config (config reload). On error nothing
    /// changes. Switching between dev certificate and files is allowed.
    pub fn reload_with(&self, cfg: &TlsConfig) -> Result<ReloadReport, StoreError> {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let next_gen = self.current.load().generation + 1;
        let (res, new_sources) = if cfg.certificates.is_empty() {
            (load_dev(next_gen), Sources::Dev)
        } else {
            (
                load_files(&cfg.certificates, cfg.default_certificate, next_gen),
                Sources::Files {
                    certs: cfg.certificates.clone(),
                    default: cfg.default_certificate,
                },
            )
        };
        let out = self.finish(res)?;
        *sources = new_sources;
        Ok(out)
    }

    fn finish(&self, res: Result<CertSet, StoreError>) -> Result<ReloadReport, StoreError> {
        match res {
            Ok(set) => {
                let changed = set.fingerprint() != self.current.load().fingerprint();
                let summary = set.summary();
                self.current.store(Arc::new(set));
                self.successes.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if changed {
                    tracing::info!("TLS certificates reloaded: {summary}");
                } else {
                    tracing::debug!("TLS certificates reloaded, unchanged: {summary}");
                }
                Ok(ReloadReport { changed, summary })
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                tracing::error!("TLS certificate reload failed, keeping the old certificates: {e}");
                Err(e)
            }
        }
    }

    /// Reload counters.
    pub fn stats(&self) -> ReloadStats {
        ReloadStats {
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Certificate and key files to watch (empty for the dev certificate).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        match &*self.sources.lock().unwrap_or_else(|p| p.into_inner()) {
            Sources::Files { certs, .. } => certs
                .iter()
                .flat_map(|c| [c.cert.clone(), c.key.clone()])
                .collect(),
            Sources::Dev => Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
