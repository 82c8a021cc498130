//! Secret files (private keys, key and token files, `file:` secret references) readable by
//! group or others. Both binaries check the files their config names at start and on every
//! reload: a finding is a warning by default, or refuses the config with
//! `security.refuse_readable_secrets: true`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Default of `security.refuse_readable_secrets`: warn only.
pub const DEFAULT_REFUSE_READABLE_SECRETS: bool = false;

/// Permission bits that make a secret file readable beyond its owner.
const OTHERS_READ: u32 = 0o044;

/// A secret file readable by group or others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The config key naming the file, e.g. `tls.certificates[0].key`.
    pub key: String,
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

impl Finding {
    /// Why it is a problem, for a warning or a config error (without the key).
    pub fn reason(&self) -> String {
        format!(
            "secret file {} is readable by group or others (mode {:04o}): make it readable by its owner only (chmod 600)",
            self.path.display(),
            self.mode
        )
    }
}

/// The path of a secret reference `file:PATH` (`None` for a literal or `env:NAME`).
pub fn file_ref(value: &str) -> Option<&Path> {
    value.strip_prefix("file:").map(Path::new)
}

/// Checks the secret files `(config key, path)`; a file that cannot be read is left to the
/// code that reads it (which reports it). Symbolic links are followed (the mode of the
/// file itself counts).
pub fn check(files: &[(String, PathBuf)]) -> Vec<Finding> {
    files
        .iter()
        .filter_map(|(key, path)| {
            let meta = std::fs::metadata(path).ok()?;
            let mode = meta.mode() & 0o7777;
            (meta.is_file() && mode & OTHERS_READ != 0).then(|| Finding {
                key: key.clone(),
                path: path.clone(),
                mode,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_or_world_readable_files_are_found() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        for (name, mode) in [("a", 0o600), ("b", 0o644), ("c", 0o640), ("d", 0o400)] {
            let p = d.path().join(name);
            std::fs::write(&p, "secret").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            files.push((format!("k.{name}"), p));
        }
        files.push(("k.missing".into(), d.path().join("missing")));
        let found = check(&files);
        let keys: Vec<_> = found.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["k.b", "k.c"]);
        assert_eq!(found[0].mode, 0o644);
        assert!(
            found[0].reason().contains("mode 0644"),
            "{}",
            found[0].reason()
        );
    }

    #[test]
    fn file_references() {
        assert_eq!(file_ref("file:/etc/k"), Some(Path::new("/etc/k")));
        assert_eq!(file_ref("env:K"), None);
        assert_eq!(file_ref("literal"), None);
    }
}
