//! Secrets referenced from the config instead of written in it: `env:NAME` (an environment
//! variable) or `file:/path` (a file, surrounding whitespace trimmed), e.g. a Kubernetes
//! Secret exposed to the proxy, so the config itself (a ConfigMap) holds no secret.
//! Read when the config is loaded: a reload re-reads them.

use super::ConfigError;

/// Resolves `value` (`env:NAME`, `file:PATH` or the secret itself) for `key` of `file`.
pub fn resolve(file: &str, key: &str, value: &str) -> Result<String, ConfigError> {
    if let Some(var) = value.strip_prefix("env:") {
        return std::env::var(var).map_err(|_| {
            ConfigError::new(
                file,
                key,
                format!("environment variable {var:?} is not set (or not UTF-8)"),
            )
        });
    }
    if let Some(path) = value.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| ConfigError::new(file, key, format!("cannot read {path:?}: {e}")));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_and_literal() {
        assert_eq!(
            resolve("f", "k", "plain-secret").expect("literal"),
            "plain-secret"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s");
        std::fs::write(&p, "from-a-file-0123456789\n").expect("write");
        let v = resolve("f", "k", &format!("file:{}", p.display())).expect("file");
        assert_eq!(v, "from-a-file-0123456789");
        let e = resolve(
            "f.yaml",
            "routing.affinity_secrets[0]",
            "file:/nonexistent/x",
        )
        .expect_err("missing file");
        assert_eq!(e.key, "routing.affinity_secrets[0]");
        let e = resolve("f", "k", "env:HOTPLEX_TEST_SURELY_UNSET_VARIABLE").expect_err("unset");
        assert!(
            e.reason.contains("HOTPLEX_TEST_SURELY_UNSET_VARIABLE"),
            "{e}"
        );
        // PATH is always set in a test run.
        assert!(!resolve("f", "k", "env:PATH").expect("env").is_empty());
    }
}
