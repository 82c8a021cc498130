//! The secret files a proxy config names, checked for modes that let group or others read
//! them (see [`hotplex_common::secrets`]): warnings, or a refused config with
//! `security.refuse_readable_secrets: true`.

use super::file::FileConfig;
use super::ConfigError;

/// The secret files `f` names (TLS keys, token and key files, `file:` references) that
/// group or others can read: warnings, or an error with `security.refuse_readable_secrets`.
pub(crate) fn readable_secrets(file: &str, f: &FileConfig) -> Result<Vec<String>, ConfigError> {
    use hotplex_common::secrets;
    use std::path::PathBuf;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (i, c) in f.tls.iter().flat_map(|t| t.certificates.iter()).enumerate() {
        files.push((format!("tls.certificates[{i}].key"), c.key.clone()));
    }
    if let Some(t) = &f.admin.token_file {
        files.push(("admin.token_file".into(), PathBuf::from(t)));
    }
    for (i, k) in f.auth.keys.iter().enumerate() {
        if let Some(p) = &k.file {
            files.push((format!("auth.keys[{i}].file"), p.clone()));
        }
    }
    for (i, s) in f.routing.affinity_secrets.iter().enumerate() {
        if let Some(p) = secrets::file_ref(s) {
            files.push((format!("routing.affinity_secrets[{i}]"), p.to_path_buf()));
        }
    }
    if let Some(p) = f.worker_auth.key.as_deref().and_then(secrets::file_ref) {
        files.push(("worker_auth.key".into(), p.to_path_buf()));
    }
    let found = secrets::check(&files);
    match found.first() {
        Some(first) if f.security.refuse_readable_secrets => Err(ConfigError::new(
            file,
            &first.key,
            format!(
                "{} (security.refuse_readable_secrets is on)",
                first.reason()
            ),
        )),
        _ => Ok(found
            .iter()
            .map(|x| format!("{}: {}", x.key, x.reason()))
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn every_secret_file_key_is_checked_and_refusal_names_the_key() {
        let d = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, mode: u32| {
            let p = d.path().join(name);
            std::fs::write(&p, "0123456789abcdef0123").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            p.display().to_string()
        };
        let yaml = format!(
            "tls:\n  certificates: [{{cert: /c.pem, key: {}}}]\nadmin:\n  token_file: {}\nauth:\n  keys: [{{name: a, file: {}}}]\nrouting:\n  affinity_secrets: [\"file:{}\"]\nworker_auth:\n  key: \"file:{}\"\n",
            file("tls.key", 0o644),
            file("tokens", 0o644),
            file("api.key", 0o600),
            file("aff", 0o604),
            file("worker.key", 0o400),
        );
        let f: FileConfig = serde_yaml::from_str(&yaml).expect("yaml");
        let w = readable_secrets("p.yaml", &f).expect("warnings only");
        let keys: Vec<&str> = w
            .iter()
            .map(|l| l.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            [
                "tls.certificates[0].key",
                "admin.token_file",
                "routing.affinity_secrets[0]"
            ]
        );
        let f: FileConfig = serde_yaml::from_str(&format!(
            "{yaml}security:\n  refuse_readable_secrets: true\n"
        ))
        .expect("yaml");
        let e = readable_secrets("p.yaml", &f).expect_err("refused");
        assert_eq!(e.key, "tls.certificates[0].key");
        assert!(e.reason.contains("mode 0644"), "{e}");
    }
}
