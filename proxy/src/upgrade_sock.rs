//! Where the graceful-upgrade socket lives, and whether that place is private.
//!
//! The old process hands its listening sockets to whoever listens on `upgrade.sock`, and the
//! new process takes listeners from whoever connects to it (see [`crate::handover`]). A path
//! another user can create, replace or reach would let that user take the proxy's port. So:
//!
//! - the default is a private runtime directory: `$RUNTIME_DIRECTORY/upgrade.sock` (systemd
//!   `RuntimeDirectory=hotplex-proxy`), else `/run/hotplex-proxy/upgrade.sock` as root, else
//!   `$XDG_RUNTIME_DIR/hotplex-proxy/upgrade.sock`; none of these: upgrades are disabled;
//! - at start the directory of the default path is created with mode 0700;
//! - a directory writable by group or others, or owned by another uid (root excepted), is
//!   refused, and so is an existing socket path that belongs to another uid (root
//!   excepted). The same checks run again right before a handover.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Name of the socket inside the runtime directory.
pub const SOCKET_NAME: &str = "upgrade.sock";
/// Runtime directory used as root without `RUNTIME_DIRECTORY`.
pub const ROOT_RUNTIME_DIR: &str = "/run/hotplex-proxy";
/// Directory name under `$XDG_RUNTIME_DIR`.
pub const XDG_SUBDIR: &str = "hotplex-proxy";
/// Mode of a runtime directory the proxy creates.
pub const DIR_MODE: u32 = 0o700;

/// The effective uid of this process.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The default socket path from the environment: `runtime_directory` (`$RUNTIME_DIRECTORY`,
/// the first of several colon-separated entries), else [`ROOT_RUNTIME_DIR`] as root, else
/// `xdg` (`$XDG_RUNTIME_DIR`)/[`XDG_SUBDIR`]. `None`: no private directory is known.
pub fn default_path(
    runtime_directory: Option<&str>,
    is_root: bool,
    xdg: Option<&str>,
) -> Option<PathBuf> {
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(dir) = nonempty(runtime_directory.and_then(|r| r.split(':').next())) {
        return Some(Path::new(&dir).join(SOCKET_NAME));
    }
    if is_root {
        return Some(Path::new(ROOT_RUNTIME_DIR).join(SOCKET_NAME));
    }
    nonempty(xdg).map(|x| Path::new(&x).join(XDG_SUBDIR).join(SOCKET_NAME))
}

/// [`default_path`] from this process's environment and uid.
pub fn default_path_from_env() -> Option<PathBuf> {
    default_path(
        std::env::var("RUNTIME_DIRECTORY").ok().as_deref(),
        euid() == 0,
        std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
    )
}

/// Creates the socket's directory (mode [`DIR_MODE`]) when it is missing; used for the
/// default path only (a configured path's directory must exist).
pub fn create_dir(sock: &Path) -> Result<(), String> {
    let dir = parent(sock)?;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))
}

/// Refuses a socket path others could reach or replace: its directory must exist, be owned
/// by `uid` or root and not be writable by group or others; an existing file at the path
/// must be a socket owned by `uid` or root.
pub fn check(sock: &Path, uid: u32) -> Result<(), String> {
    let dir = parent(sock)?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("directory {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(format!(
            "directory {} belongs to uid {}, not to this process (uid {uid}): use a private directory (mode 0700, owned by the service user)",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "directory {} is writable by group or others (mode {:o}): another user could replace the socket; use a private directory (mode 0700)",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    match std::fs::symlink_metadata(sock) {
        Ok(m) => {
            if m.uid() != uid && m.uid() != 0 {
                return Err(format!(
                    "{} exists and belongs to uid {}, not to this process (uid {uid})",
                    sock.display(),
                    m.uid()
                ));
            }
            if !m.file_type().is_socket() {
                return Err(format!("{} exists and is not a socket", sock.display()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", sock.display())),
    }
}

fn parent(sock: &Path) -> Result<&Path, String> {
    match sock.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => Err(format!(
            "{} has no directory: give an absolute path",
            sock.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn default_path_prefers_runtime_directory_then_root_then_xdg() {
        let p = |r, root, x| default_path(r, root, x).map(|p| p.display().to_string());
        assert_eq!(
            p(
                Some("/run/hotplex-proxy:/run/other"),
                false,
                Some("/run/user/1")
            ),
            Some("/run/hotplex-proxy/upgrade.sock".into())
        );
        assert_eq!(
            p(None, true, Some("/run/user/0")),
            Some("/run/hotplex-proxy/upgrade.sock".into())
        );
        assert_eq!(
            p(Some(""), false, Some("/run/user/1000")),
            Some("/run/user/1000/hotplex-proxy/upgrade.sock".into())
        );
        assert_eq!(p(None, false, None), None);
        assert_eq!(p(None, false, Some("")), None);
    }

    #[test]
    fn private_directory_passes_and_is_created_0700() {
        let d = tempfile::tempdir().expect("tempdir");
        let sock = d.path().join("rt").join(SOCKET_NAME);
        create_dir(&sock).expect("create");
        let mode = std::fs::metadata(d.path().join("rt")).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o700);
        check(&sock, euid()).expect("private dir is fine");
    }

    #[test]
    fn group_or_world_writable_directory_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        for mode in [0o1777, 0o770, 0o702] {
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode))
                .expect("chmod");
            let e = check(&d.path().join(SOCKET_NAME), euid()).expect_err("refused");
            assert!(e.contains("writable by group or others"), "{mode:o}: {e}");
        }
    }

    #[test]
    fn directory_of_another_uid_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let mine = std::fs::metadata(d.path()).expect("meta").uid();
        // Seen from another (non-root) uid, this directory belongs to someone else.
        let other = if mine == 4242 { 4243 } else { 4242 };
        if mine == 0 {
            // Root-owned directories are trusted by everyone (root can do anything anyway).
            check(&d.path().join(SOCKET_NAME), other).expect("root-owned is fine");
        } else {
            let e = check(&d.path().join(SOCKET_NAME), other).expect_err("refused");
            assert!(e.contains("belongs to uid"), "{e}");
        }
    }

    #[test]
    fn existing_non_socket_and_relative_paths_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join(SOCKET_NAME);
        std::fs::write(&f, "x").expect("write");
        let e = check(&f, euid()).expect_err("refused");
        assert!(e.contains("not a socket"), "{e}");
        let e = check(Path::new("upgrade.sock"), euid()).expect_err("refused");
        assert!(e.contains("absolute path"), "{e}");
    }
}
