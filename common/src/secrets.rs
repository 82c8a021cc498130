//! Secret files (private keys, key and token files, `file:` secret references) readable by
//! group or others. Both binaries check the files their config names at start and on every
//! reload: a finding is a warning by default, or refuses the config with
//! `security.refuse_readable_secrets: true`.
//!
//! The rule: readable by others is always a finding; readable by the file's group is one
//! unless that group is the process's own primary (effective) gid, i.e. the group exists
//! for this service (a Kubernetes Secret mounted with `defaultMode: 0440` and the pod's
//! `fsGroup` equal to the service's gid; `/etc/hotplex/*.yaml` installed `0640
//! root:hotplex-proxy`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Default of `security.refuse_readable_secrets`: warn only.
pub const DEFAULT_REFUSE_READABLE_SECRETS: bool = false;

/// Readable by others: always a finding.
const OTHERS_READ: u32 = 0o004;
/// Readable by the file's group: a finding unless the group is the process's own.
const GROUP_READ: u32 = 0o040;

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
            "secret file {} is readable by group or others (mode {:04o}): make it readable by its owner only (chmod 600), or by the service's own primary group only (0640/0440)",
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
    check_for_gid(files, own_gid())
}

/// [`check`] for a process whose primary (effective) gid is `own_gid` (`None`: unknown,
/// every group-readable file is a finding).
pub fn check_for_gid(files: &[(String, PathBuf)], own_gid: Option<u32>) -> Vec<Finding> {
    files
        .iter()
        .filter_map(|(key, path)| {
            let meta = std::fs::metadata(path).ok()?;
            let mode = meta.mode() & 0o7777;
            let own_group = Some(meta.gid()) == own_gid;
            let exposed = mode & OTHERS_READ != 0 || (mode & GROUP_READ != 0 && !own_group);
            (meta.is_file() && exposed).then(|| Finding {
                key: key.clone(),
                path: path.clone(),
                mode,
            })
        })
        .collect()
}

/// This process's effective gid (the second field of `Gid:` in `/proc/self/status`).
fn own_gid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_or_world_readable_files_are_found() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        for (name, mode) in [("a", 0o600), ("b", 0o644), ("c", 0o640), ("d", 0o400)] {
            let p = d.path().join(name);
            std::fs::write(&p, "secret").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            files.push((format!("k.{name}"), p));
        }
        files.push(("k.missing".into(), d.path().join("missing")));
        // As a process of another group than the files' (see the next test for its own).
        let foreign = std::fs::metadata(&files[0].1)
            .expect("stat")
            .gid()
            .wrapping_add(1);
        let found = check_for_gid(&files, Some(foreign));
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
    fn group_readable_is_fine_for_the_process_own_primary_group_only() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        for (name, mode) in [
            ("g440", 0o440),
            ("g640", 0o640),
            ("o444", 0o444),
            ("o604", 0o604),
        ] {
            let p = d.path().join(name);
            std::fs::write(&p, "secret").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            files.push((name.to_string(), p));
        }
        let gid = std::fs::metadata(&files[0].1).expect("stat").gid();
        let keys = |found: Vec<Finding>| found.into_iter().map(|f| f.key).collect::<Vec<_>>();
        // The files' group is the process's own: group-readable passes, others-readable not.
        assert_eq!(keys(check_for_gid(&files, Some(gid))), ["o444", "o604"]);
        // Another group (e.g. the kubelet's default 0644 or a foreign gid): all of them.
        assert_eq!(
            keys(check_for_gid(&files, Some(gid.wrapping_add(1)))),
            ["g440", "g640", "o444", "o604"]
        );
        assert_eq!(keys(check_for_gid(&files, None)).len(), 4, "unknown gid");
        // This process's real gid is read from /proc.
        assert_eq!(
            own_gid(),
            Some(gid),
            "a file created by this process has its gid"
        );
    }

    #[test]
    fn file_references() {
        assert_eq!(file_ref("file:/etc/k"), Some(Path::new("/etc/k")));
        assert_eq!(file_ref("env:K"), None);
        assert_eq!(file_ref("literal"), None);
    }
}
