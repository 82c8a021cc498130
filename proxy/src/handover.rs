//! The graceful-upgrade handover of the listening sockets, done by the proxy itself instead
//! of pingora's `transfer_fd` (which binds its socket 0666, trusts any peer and takes any
//! fd under any name). Wire format unchanged (space-separated bind addresses, the fds as
//! `SCM_RIGHTS`), so an older pingora-based proxy can still hand over to this one.
//!
//! - The proxy's listeners register their fds in an own table ([`OwnFds`] passes it to the
//!   listening service instead of pingora's, which stays empty), so pingora never sends.
//! - Old process, on SIGQUIT ([`HandoverSignals`]): re-checks the socket path
//!   ([`crate::upgrade_sock::check`]), connects, checks the peer's uid (`SO_PEERCRED`: this
//!   process's uid or root), sends, and waits for the new process's acknowledgement. No
//!   acknowledged handover: the proxy stops gracefully with [`handover_failed`] set, and
//!   exits non-zero (`Restart=on-failure` restarts it).
//! - New process (`--upgrade`, [`receive`]): binds the socket 0600 in its checked directory,
//!   refuses a peer of another uid before reading anything, and keeps only fds that are
//!   listening TCP sockets bound to one of its configured listener addresses; every other
//!   fd is closed and logged.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage};
use pingora::server::{Fds, ListenFds, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};

use crate::signals::{Early, Stop};
use crate::upgrade_sock;

/// Exit code after a SIGQUIT that handed the listening sockets to no new process (so that
/// systemd's `Restart=on-failure` starts the proxy again).
pub const EXIT_NO_HANDOVER: u8 = 3;

/// How long a new process (`--upgrade`) waits for the old one's listeners (pingora's own
/// wait was about 5 s; longer leaves an operator or a unit's `ExecReload` time for SIGQUIT).
pub const RECEIVE_WAIT: Duration = Duration::from_secs(15);
/// How long the old process tries to reach the new one's socket after SIGQUIT.
pub const SEND_WAIT: Duration = Duration::from_secs(5);
/// After a handover both processes accept for this long (pingora's `CLOSE_TIMEOUT`).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-connection read/write limit on the upgrade socket.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many fds are read from one handover message.
const MAX_FDS: usize = 32;
const ACK_TAKEN: u8 = b'1';
const ACK_REFUSED: u8 = b'0';

static HANDOVER_FAILED: AtomicBool = AtomicBool::new(false);

/// True once a SIGQUIT ended without a new process taking the listeners.
pub fn handover_failed() -> bool {
    HANDOVER_FAILED.load(Ordering::Relaxed)
}

/// A fresh listener table for [`OwnFds`], holding `fds` (received ones, or none).
pub fn table(fds: Fds) -> ListenFds {
    Arc::new(parking_lot::Mutex::new(fds))
}

/// A pingora service started with the proxy's own listener table instead of pingora's.
pub struct OwnFds<S> {
    inner: S,
    fds: ListenFds,
}

impl<S> OwnFds<S> {
    pub fn new(inner: S, fds: ListenFds) -> Self {
        OwnFds { inner, fds }
    }
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for OwnFds<S> {
    async fn start_service(
        &mut self,
        _pingora_fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        let fds = Some(self.fds.clone());
        self.inner
            .start_service(fds, shutdown, listeners_per_fd, ready_notifier)
            .await
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }
    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

/// May a peer of this uid hand over or take listeners? This process's uid or root.
fn uid_allowed(uid: u32) -> bool {
    uid == upgrade_sock::euid() || uid == 0
}

fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let cred = socket::getsockopt(stream, socket::sockopt::PeerCredentials)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    if uid_allowed(cred.uid()) {
        Ok(())
    } else {
        Err(format!(
            "peer pid {} runs as uid {}, not as this process's uid {} or root",
            cred.pid(),
            cred.uid(),
            upgrade_sock::euid()
        ))
    }
}

/// New process: listens on `sock` until a peer of an allowed uid hands over at least one
/// listener for an address in `expected`, or `wait` passes.
pub fn receive(sock: &Path, expected: &[SocketAddr], wait: Duration) -> Result<Fds, String> {
    use std::os::unix::fs::PermissionsExt;
    upgrade_sock::check(sock, upgrade_sock::euid())?;
    match std::fs::remove_file(sock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove the old {}: {e}", sock.display())),
    }
    // Bound under a temporary name, made 0600, then renamed into place: the socket never
    // exists at its path with the umask's mode.
    let mut tmp = sock.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).map_err(|e| format!("cannot bind {}: {e}", tmp.display()))?;
    let cleanup = |r| {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(sock);
        r
    };
    if let Err(e) = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, sock))
        .and_then(|()| listener.set_nonblocking(true))
    {
        return cleanup(Err(format!("{}: {e}", sock.display())));
    }
    tracing::info!(sock = %sock.display(), "waiting for the running proxy's listening sockets (send it SIGQUIT)");
    let deadline = Instant::now() + wait;
    cleanup(loop {
        match listener.accept() {
            Ok((stream, _)) => match take_from(stream, expected) {
                Ok(fds) if !fds.is_empty() => break Ok(fds),
                Ok(_) => {
                    tracing::warn!(target: "audit", event = "upgrade.handover_refused", reason = "no usable listener in the message", "upgrade socket: nothing taken; still waiting")
                }
                Err(reason) => {
                    tracing::warn!(target: "audit", event = "upgrade.handover_refused", %reason, "upgrade socket: connection refused; still waiting")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    break Err(format!(
                        "no listening sockets received on {} within {wait:?}",
                        sock.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => break Err(format!("accept on {}: {e}", sock.display())),
        }
    })
}

/// Reads one handover message from an allowed peer; keeps the valid listeners, closes the
/// rest, acknowledges.
fn take_from(mut stream: UnixStream, expected: &[SocketAddr]) -> Result<Fds, String> {
    let io = |e: std::io::Error| e.to_string();
    stream.set_nonblocking(false).map_err(io)?;
    stream.set_read_timeout(Some(PEER_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(PEER_TIMEOUT)).map_err(io)?;
    // Before reading anything: fds of a foreign peer are never received into this process.
    check_peer(&stream)?;
    let mut buf = [0u8; 2048];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (fds, len) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("recvmsg: {e}"))?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|e| format!("control messages: {e}"))? {
            if let ControlMessageOwned::ScmRights(v) = c {
                fds.extend(v);
            }
        }
        (fds, msg.bytes)
    };
    let keys: Vec<&str> = std::str::from_utf8(&buf[..len])
        .unwrap_or("")
        .split_ascii_whitespace()
        .collect();
    let mut out = Fds::new();
    let mut taken = Vec::new();
    for (i, fd) in fds.iter().enumerate() {
        let key = keys.get(i).copied().unwrap_or("");
        let verdict = if taken.iter().any(|k| k == key) {
            Err("a second fd for the same address".to_string())
        } else {
            validate(key, *fd, expected)
        };
        match verdict {
            Ok(()) => {
                out.add(key.to_string(), *fd);
                taken.push(key.to_string());
            }
            Err(reason) => {
                tracing::warn!(target: "audit", event = "upgrade.listener_refused", address = key, %reason, "refused a handed-over socket (closed)");
                let _ = nix::unistd::close(*fd);
            }
        }
    }
    let ack = if out.is_empty() {
        ACK_REFUSED
    } else {
        ACK_TAKEN
    };
    // An older sender does not read the acknowledgement; its close is not an error here.
    let _ = stream.write_all(&[ack]);
    if !out.is_empty() {
        tracing::info!(target: "audit", event = "upgrade.listeners_taken", addresses = ?taken, "took the listening sockets over");
    }
    Ok(out)
}

/// Is `fd` a listening TCP socket bound to `key`, one of the `expected` addresses?
fn validate(key: &str, fd: RawFd, expected: &[SocketAddr]) -> Result<(), String> {
    let addr: SocketAddr = key
        .parse()
        .map_err(|_| "not a TCP listener address".to_string())?;
    if !expected.contains(&addr) {
        return Err("not one of this proxy's configured listener addresses".into());
    }
    let local: SockaddrStorage =
        socket::getsockname(fd).map_err(|e| format!("not a socket: {e}"))?;
    let local = if let Some(v4) = local.as_sockaddr_in() {
        SocketAddr::V4((*v4).into())
    } else if let Some(v6) = local.as_sockaddr_in6() {
        SocketAddr::V6((*v6).into())
    } else {
        return Err("not an IP socket".into());
    };
    if local != addr {
        return Err(format!("the socket is bound to {local}"));
    }
    if !tcp_listening(fd)? {
        return Err("not a listening TCP socket".into());
    }
    Ok(())
}

/// Whether `fd` (of this process) is a TCP socket in the LISTEN state, read from
/// `/proc/self/net/tcp{,6}` by the socket's inode.
fn tcp_listening(fd: RawFd) -> Result<bool, String> {
    let link =
        std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|e| format!("fd {fd}: {e}"))?;
    let link = link.to_string_lossy();
    let Some(inode) = link
        .strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
    else {
        return Ok(false);
    };
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).map_err(|e| format!("{table}: {e}"))?;
        if listed_listening(&text, inode) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// In a `/proc/net/tcp` table: is the socket with this inode in state LISTEN (`0A`)?
fn listed_listening(table: &str, inode: &str) -> bool {
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(9) == Some(&inode) && f.get(3) == Some(&"0A")
    })
}

/// Old process: hands the listeners in `table` to the process listening on `sock`.
/// Returns how many were taken (acknowledged).
pub fn send(sock: &Path, table: &ListenFds, wait: Duration) -> Result<usize, String> {
    let (keys, fds) = table.lock().serialize();
    if fds.is_empty() {
        return Err("no listening sockets to hand over".into());
    }
    let deadline = Instant::now() + wait;
    let mut stream = loop {
        // Checked again now: the directory or the socket may have changed since start.
        upgrade_sock::check(sock, upgrade_sock::euid())?;
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("no new process listens on {}: {e}", sock.display())),
        }
    };
    check_peer(&stream)?;
    let io = |e: std::io::Error| e.to_string();
    stream.set_read_timeout(Some(PEER_TIMEOUT)).map_err(io)?;
    let payload = keys.join(" ");
    socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(payload.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("sendmsg: {e}"))?;
    let mut ack = [0u8; 1];
    match stream.read(&mut ack) {
        Ok(1) if ack[0] == ACK_TAKEN => Ok(fds.len()),
        Ok(1) => Err("the new process refused every listening socket".into()),
        // A pingora-based receiver closes without acknowledging.
        Ok(_) => Ok(fds.len()),
        Err(e) => Err(format!("no acknowledgement from the new process: {e}")),
    }
}

/// pingora's shutdown signal watch with the handover done by [`send`] on SIGQUIT.
pub struct HandoverSignals {
    /// `upgrade.sock`; `None`: upgrades are disabled.
    pub sock: Option<PathBuf>,
    /// The listener table of [`OwnFds`].
    pub fds: ListenFds,
    /// The signals recorded since before the services started.
    pub early: Early,
}

#[async_trait]
impl ShutdownSignalWatch for HandoverSignals {
    async fn recv(&self) -> ShutdownSignal {
        match crate::signals::next_stop(&self.early).await {
            None => return std::future::pending().await,
            Some(Stop::Fast) => return ShutdownSignal::FastShutdown,
            Some(Stop::Graceful) => return ShutdownSignal::GracefulTerminate,
            Some(Stop::Upgrade) => {}
        }
        let result = match self.sock.clone() {
            None => Err("graceful upgrade is disabled (no upgrade.sock: set it, or RUNTIME_DIRECTORY / XDG_RUNTIME_DIR)".to_string()),
            Some(sock) => {
                let fds = self.fds.clone();
                tokio::task::spawn_blocking(move || send(&sock, &fds, SEND_WAIT))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            }
        };
        match result {
            Ok(n) => {
                tracing::info!(target: "audit", event = "upgrade.handed_over", listeners = n, "SIGQUIT: listening sockets handed over; accepting {CLOSE_TIMEOUT:?} more, then stopping");
                tokio::time::sleep(CLOSE_TIMEOUT).await;
                ShutdownSignal::GracefulUpgrade
            }
            Err(reason) => {
                HANDOVER_FAILED.store(true, Ordering::Relaxed);
                tracing::error!(target: "audit", event = "upgrade.handover_failed", %reason, "SIGQUIT: no new process took the listening sockets; stopping gracefully with a failure exit status");
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_listen_state_by_inode() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F41 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n";
        assert!(listed_listening(t, "4242"));
        assert!(!listed_listening(t, "4343"), "established, not listening");
        assert!(!listed_listening(t, "42"));
    }

    #[test]
    fn only_listening_tcp_sockets_on_configured_addresses_are_kept() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let key = addr.to_string();
        assert_eq!(validate(&key, l.as_raw_fd(), &[addr]), Ok(()));
        let e = validate(&key, l.as_raw_fd(), &[]).expect_err("unconfigured");
        assert!(e.contains("configured"), "{e}");
        // A listener on another port, named with the configured address.
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let e = validate(&key, other.as_raw_fd(), &[addr]).expect_err("foreign");
        assert!(e.contains("bound to"), "{e}");
        // A UDP socket on the same address and port.
        let udp = std::net::UdpSocket::bind(addr).expect("udp bind");
        let e = validate(&key, udp.as_raw_fd(), &[addr]).expect_err("udp");
        assert!(e.contains("not a listening TCP socket"), "{e}");
        // A connected (not listening) TCP socket.
        let c = std::net::TcpStream::connect(addr).expect("connect");
        let (s, _) = l.accept().expect("accept");
        let e = validate(&key, s.as_raw_fd(), &[addr]).expect_err("accepted");
        assert!(e.contains("not a listening TCP socket"), "{e}");
        drop(c);
        let e = validate("not-an-address", l.as_raw_fd(), &[addr]).expect_err("bad key");
        assert!(e.contains("address"), "{e}");
    }

    #[test]
    fn handover_between_two_threads_of_the_same_uid() {
        let d = tempfile::tempdir().expect("tempdir");
        let sock = d.path().join("upgrade.sock");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut fds = Fds::new();
        fds.add(addr.to_string(), l.as_raw_fd());
        // An extra, unconfigured listener is refused and closed on the receiving side.
        let extra = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        fds.add(
            extra.local_addr().expect("addr").to_string(),
            extra.as_raw_fd(),
        );
        let tbl = table(fds);
        let s2 = sock.clone();
        let rx = std::thread::spawn(move || receive(&s2, &[addr], Duration::from_secs(10)));
        let sent = send(&sock, &tbl, Duration::from_secs(10)).expect("sent");
        assert_eq!(sent, 2);
        let got = rx.join().expect("join").expect("received");
        let fd = *got
            .get(&addr.to_string())
            .expect("configured listener taken");
        assert_ne!(fd, l.as_raw_fd(), "a new fd for the same socket");
        assert_eq!(validate(&addr.to_string(), fd, &[addr]), Ok(()));
        assert!(got
            .get(&extra.local_addr().expect("a").to_string())
            .is_none());
        assert!(!sock.exists(), "the socket is removed after the handover");
        let _ = nix::unistd::close(fd);
    }

    #[test]
    fn send_without_receiver_fails_after_the_wait() {
        let d = tempfile::tempdir().expect("tempdir");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut fds = Fds::new();
        fds.add(l.local_addr().expect("a").to_string(), l.as_raw_fd());
        let e = send(
            &d.path().join("upgrade.sock"),
            &table(fds),
            Duration::from_millis(300),
        )
        .expect_err("nobody listens");
        assert!(e.contains("no new process"), "{e}");
        let e = send(
            &d.path().join("upgrade.sock"),
            &table(Fds::new()),
            Duration::from_millis(300),
        )
        .expect_err("nothing to send");
        assert!(e.contains("no listening sockets"), "{e}");
    }
}
