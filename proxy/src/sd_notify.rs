//! systemd readiness and main-PID notification (`sd_notify`, without libsystemd): with
//! `Type=notify` and `NotifyAccess=all`, each proxy process sends `READY=1` and
//! `MAINPID=<its pid>` once its services run. A process started by a binary upgrade
//! (`--upgrade`, e.g. from `ExecReload=hotplex-proxy upgrade ...`) thereby becomes the
//! unit's main process, so systemd keeps supervising the proxy after the old one exits.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// Sends `msg` to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). Without the
/// variable: nothing. Returns whether a message was sent.
pub fn notify(msg: &str) -> std::io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(t) => notify_to(&t.to_string_lossy(), msg).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `msg` to the notification socket `target` (a path, or `@name`).
pub fn notify_to(target: &str, msg: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(msg.as_bytes(), &addr)?;
    } else {
        sock.send_to(msg.as_bytes(), target)?;
    }
    Ok(())
}

/// Background service sending `READY=1` and `MAINPID=` once the services started.
pub struct NotifyReady;

#[async_trait]
impl BackgroundService for NotifyReady {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let msg = format!("READY=1\nMAINPID={}\n", std::process::id());
        match notify(&msg) {
            Ok(true) => tracing::info!(
                pid = std::process::id(),
                "notified systemd: ready, main pid"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifies_path_and_abstract_sockets() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("notify.sock");
        let rx = std::os::unix::net::UnixDatagram::bind(&p).expect("bind");
        notify_to(&p.display().to_string(), "READY=1\n").expect("sent");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\n");
        use std::os::linux::net::SocketAddrExt;
        let name = format!("hotplex-test-{}", std::process::id());
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("a");
        let rx = std::os::unix::net::UnixDatagram::bind_addr(&a).expect("bind");
        notify_to(&format!("@{name}"), "MAINPID=1\n").expect("sent");
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"MAINPID=1\n");
    }
}
