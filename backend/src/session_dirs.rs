//! The directories of per-session isolation (see [`crate::sandbox`]): the session root
//! and each session's 0700 directory, the uid-lock directory, and the checks that keep
//! agents (other uids) from reaching or replacing them.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` (0700) or checks that it is owned by `euid` and closed to others.
pub(crate) fn private_dir(dir: &Path, euid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.to_string()),
    }
    let m = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !m.is_dir() || m.uid() != euid || m.mode() & 0o022 != 0 {
        return Err(format!(
            "must be a directory owned by uid {euid} that no one else can write (is uid {}, mode {:o})",
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

/// `dir` and its ancestors must not be writable by others without the sticky bit:
/// otherwise an agent (another uid) could rename the worker's directories away and put
/// its own in their place (e.g. a Kubernetes `emptyDir`, mode 0777, mounted at `/tmp`).
/// Such a directory owned by the worker gets the sticky bit (as `/tmp` has, 1777);
/// one owned by someone else is a startup error.
pub(crate) fn no_replaceable_ancestor(dir: &Path, euid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let abs = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    for a in abs.ancestors() {
        let m = std::fs::metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
        let mode = m.mode() & 0o7777;
        if mode & 0o002 == 0 || mode & 0o1000 != 0 {
            continue;
        }
        if m.uid() != euid {
            return Err(format!(
                "{} (mode {mode:o}, uid {}) is writable by the agent users without the sticky \
                 bit: they could replace the worker's directories; use 1777 or 0755",
                a.display(),
                m.uid()
            ));
        }
        std::fs::set_permissions(a, std::fs::Permissions::from_mode(mode | 0o1000))
            .map_err(|e| format!("{}: cannot set the sticky bit: {e}", a.display()))?;
        tracing::warn!(
            dir = %a.display(),
            mode = format!("{mode:o}"),
            "a directory above the session or uid-lock directories was writable by everyone: sticky bit set (agents cannot rename the worker's entries)"
        );
    }
    Ok(())
}

/// Every ancestor of `root` must let the agent users through (o+x).
pub(crate) fn searchable_by_others(root: &Path) -> Result<(), String> {
    let abs = std::fs::canonicalize(root)
        .map_err(|e| format!("agent.session_dirs: {}: {e}", root.display()))?;
    for a in abs.ancestors() {
        let mode = std::fs::metadata(a)
            .map_err(|e| format!("agent.session_dirs: {}: {e}", a.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "agent.session_dirs: {} (mode {:o}) must be searchable by the agent users \
                 (o+x, e.g. 0711)",
                a.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// `<temp dir>/hotplex-sessions-<pid>-<random>`, mode 0711 (agents reach their own
/// directory but cannot list the others'). Roots left by workers that are gone (killed
/// before their shutdown) are removed first.
pub(crate) fn private_root() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    remove_stale_roots(&base);
    let pid = std::process::id();
    for _ in 0..8 {
        let p = base.join(format!(
            "hotplex-sessions-{pid}-{:016x}",
            crate::sandbox::rand_u64()
        ));
        match std::fs::DirBuilder::new().mode(0o711).create(&p) {
            Ok(()) => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711))?;
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no unique directory name"))
}

/// Removes `hotplex-sessions-<pid>-*` directories of `base` owned by this user whose
/// worker process no longer exists.
pub(crate) fn remove_stale_roots(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    let euid = crate::sandbox::Privileges::detect().euid;
    for e in dir.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hotplex-sessions-"))
            .and_then(|r| r.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == euid);
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Creates `<root>/<session_id>-<random>` and its `.tmp`, mode 0700, owned by `uid`.
pub(crate) fn create_session_dir(
    root: &Path,
    session_id: &str,
    uid: Option<u32>,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(root)?;
    for _ in 0..8 {
        let p = root.join(format!("{session_id}-{:016x}", crate::sandbox::rand_u64()));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        let made = (|| {
            let tmp = p.join(".tmp");
            std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
            for d in [&p, &tmp] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
                if let Some(u) = uid {
                    std::os::unix::fs::chown(d, Some(u), Some(u))?;
                }
            }
            Ok(())
        })();
        return match made {
            Ok(()) => Ok(p),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&p);
                Err(e)
            }
        };
    }
    Err(std::io::Error::other("no unique session directory name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_ancestors_get_the_sticky_bit_or_refuse() {
        use std::os::unix::fs::MetadataExt;
        let euid = crate::sandbox::Privileges::detect().euid;
        let base = tempfile::tempdir().expect("tempdir");
        // An emptyDir-like 0777 directory of the worker's: made sticky.
        let open = base.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let locks = open.join("locks");
        std::fs::create_dir(&locks).expect("mkdir");
        no_replaceable_ancestor(&locks, euid).expect("fixed");
        let mode = std::fs::metadata(&open).expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o1777);
        // Not the worker's own: refused (the check cannot change it).
        let e = no_replaceable_ancestor(&locks, euid.wrapping_add(1))
            .map(|_| ())
            .and_then(|_| {
                std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| e.to_string())?;
                no_replaceable_ancestor(&locks, euid.wrapping_add(1))
            })
            .expect_err("someone else's open directory");
        assert!(e.contains("sticky"), "{e}");
        // Closed or sticky directories pass unchanged.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        no_replaceable_ancestor(&locks, euid.wrapping_add(1)).expect("0755 is fine");
        assert_eq!(
            std::fs::metadata(&open).expect("stat").mode() & 0o7777,
            0o755
        );
    }

    #[test]
    fn stale_roots_of_gone_workers_are_removed() {
        let base = tempfile::tempdir().expect("tempdir");
        let gone = base.path().join("hotplex-sessions-4000000000-ab");
        let live = base
            .path()
            .join(format!("hotplex-sessions-{}-cd", std::process::id()));
        let other = base.path().join("hotplex-sessions-x");
        for d in [&gone, &live, &other] {
            std::fs::create_dir_all(d.join("s1")).expect("mkdir");
        }
        remove_stale_roots(base.path());
        assert!(!gone.exists(), "a gone worker's root is removed");
        assert!(live.exists() && other.exists(), "others are kept");
    }
}
