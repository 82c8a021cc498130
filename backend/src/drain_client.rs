//! `hotplex-worker drain|resume --url http://127.0.0.1:8080`: asks a running worker to
//! drain (`POST /admin/drain`) or to take new sessions again (`POST /admin/resume`), for
//! a Kubernetes `preStop` hook or an operator's shell. A minimal HTTP/1.1 client on a
//! plain TCP socket, so the runtime image needs no curl.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Connect, write and read timeout of the request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Splits `http://host:port[/...]` into `host:port`. Only plain `http` is supported:
/// the admin call stays on the pod's loopback.
pub fn authority(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let auth = rest.split('/').next().unwrap_or_default();
    if auth.is_empty() || !auth.contains(':') {
        return Err(format!("{url}: expected http://host:port"));
    }
    Ok(auth)
}

/// Credentials of an admin call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// `X-API-Key` (a worker with `api_keys` and no admin tokens).
    pub api_key: Option<&'a str>,
    /// `Authorization: Bearer` (a worker with `admin.tokens`).
    pub token: Option<&'a str>,
}

/// Sends `POST /admin/drain`; returns the status code and the body.
pub fn drain(url: &str, api_key: Option<&str>, timeout: Duration) -> Result<(u16, String), String> {
    let creds = Credentials {
        api_key,
        token: None,
    };
    post(url, "/admin/drain", creds, timeout)
}

/// Sends `POST <path>` (an admin endpoint) with `creds`; returns the status code and the
/// body.
pub fn post(
    url: &str,
    path: &str,
    creds: Credentials<'_>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let auth = authority(url)?;
    let addr = auth
        .to_socket_addrs()
        .map_err(|e| format!("{auth}: {e}"))?
        .next()
        .ok_or_else(|| format!("{auth}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let clean = |v: &str| !v.contains(['\r', '\n']);
    if !creds.api_key.is_none_or(clean) || !creds.token.is_none_or(clean) {
        return Err("credentials must not contain line breaks".into());
    }
    let key = creds
        .api_key
        .map(|k| format!("{}: {k}\r\n", hotplex_common::headers::X_API_KEY))
        .unwrap_or_default();
    let bearer = creds
        .token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {auth}\r\n{key}{bearer}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    parse_response(&resp)
}

fn parse_response(resp: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "malformed HTTP response".to_string())?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_checked() {
        assert_eq!(authority("http://127.0.0.1:8080"), Ok("127.0.0.1:8080"));
        assert_eq!(authority("http://localhost:80/x"), Ok("localhost:80"));
        assert!(authority("https://127.0.0.1:8080").is_err());
        assert!(authority("http://").is_err());
        assert!(authority("http://host").is_err());
    }

    #[test]
    fn responses_are_parsed() {
        let (s, b) = parse_response(b"HTTP/1.1 202 Accepted\r\nx: y\r\n\r\n{\"a\":1}").expect("ok");
        assert_eq!((s, b.as_str()), (202, "{\"a\":1}"));
        assert!(parse_response(b"garbage").is_err());
    }
}
