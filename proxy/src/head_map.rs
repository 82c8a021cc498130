//! pingora's request and response heads, edited as one plain [`HeaderMap`].
//!
//! A head pingora parsed from HTTP/1.1 keeps two maps: the values, and each name as it was
//! spelled on the wire (its case map). Its `insert_header` takes the name as bytes, parses
//! it again, inserts into both maps, and the maps of a parsed (or cloned) head have no room
//! left: ~1.3k instructions per added header in the profile (`benches/RESULTS.md`,
//! upstream proposal 1). The edge adds eight headers to every request it forwards to a
//! worker and five to every answer, so the hot path takes a head apart once instead
//! ([`edit_request`], [`edit_response`]):
//! - the case map is dropped: names go out in their canonical form (pingora titles the
//!   standard ones, the others go in lower case, as HAProxy sends every name; header names
//!   are case-insensitive, RFC 9110 5.1);
//! - room for the added headers is reserved once;
//! - the edits insert pre-parsed names (`hotplex_common::headers::name`) into the one map
//!   left.
//!
//! Everything else of the head is kept: method, target, version, status, reason phrase,
//! extensions, and a request target pingora keeps verbatim for the wire (absolute-form,
//! or not UTF-8) is restored as it was.

use http::{request, response, HeaderMap};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

/// Runs `f` on the request's headers with pingora's case map dropped and room for `extra`
/// more headers (see the module docs).
pub fn edit_request<T>(
    head: &mut RequestHeader,
    extra: usize,
    f: impl FnOnce(&mut HeaderMap) -> Result<T>,
) -> Result<T> {
    let pq = head.uri.path_and_query().map(|p| p.as_str().as_bytes());
    // The target goes back out of the Uri unless pingora kept other bytes for the wire.
    let verbatim = (pq != Some(head.raw_path())).then(|| head.raw_path().to_vec());
    let send_end_stream = head.send_end_stream();
    let empty = RequestHeader::from(request::Request::new(()).into_parts().0);
    let mut parts = request::Parts::from(std::mem::replace(head, empty));
    parts.headers.reserve(extra);
    let out = f(&mut parts.headers);
    *head = RequestHeader::from(parts);
    if let Some(raw) = verbatim {
        head.set_raw_path(&raw)?;
    }
    if let Some(end) = send_end_stream {
        head.set_send_end_stream(end);
    }
    out
}

/// Runs `f` on the response's headers with pingora's case map dropped and room for `extra`
/// more headers (see the module docs).
pub fn edit_response<T>(
    head: &mut ResponseHeader,
    extra: usize,
    f: impl FnOnce(&mut HeaderMap) -> Result<T>,
) -> Result<T> {
    // Only a phrase other than the status code's own is stored (and has to be restored).
    let reason = head.get_reason_phrase();
    let reason = (reason != head.status.canonical_reason()).then(|| reason.map(str::to_owned));
    let empty = ResponseHeader::from(response::Response::new(()).into_parts().0);
    let mut parts = response::Parts::from(std::mem::replace(head, empty));
    parts.headers.reserve(extra);
    let out = f(&mut parts.headers);
    *head = ResponseHeader::from(parts);
    if let Some(reason) = reason {
        head.set_reason_phrase(reason.as_deref())?;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use http::{HeaderName, HeaderValue};

    static X_ADDED: HeaderName = HeaderName::from_static("x-added");

    fn request_wire(head: &RequestHeader) -> String {
        let mut buf = BytesMut::new();
        head.header_to_h1_wire(&mut buf);
        String::from_utf8(buf.to_vec()).expect("utf-8")
    }

    fn parsed(target: &[u8]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", target, None).expect("head");
        r.insert_header("Content-Type", "application/json")
            .expect("h");
        r.insert_header("X-Client-Thing", "a").expect("h");
        r.append_header("X-Client-Thing", "b").expect("h");
        r.set_send_end_stream(false);
        r
    }

    #[test]
    fn a_request_keeps_everything_but_the_case_of_its_names() {
        for target in [
            &b"/sessions/s1/messages?x=1&y=%2F"[..],
            b"http://worker.example/sessions?q=1",
            b"/caf\xc3\xa9/\xff",
            b"*",
        ] {
            let mut r = parsed(target);
            // The END_STREAM flag exists on HTTP/2 heads only.
            r.set_version(http::Version::HTTP_2);
            let raw = r.raw_path().to_vec();
            let uri = r.uri.clone();
            edit_request(&mut r, 2, |h| {
                assert!(h.capacity() >= h.len() + 2, "room reserved");
                h.insert(&X_ADDED, HeaderValue::from_static("1"));
                Ok(())
            })
            .expect("edit");
            assert_eq!(r.raw_path(), raw, "target of {target:?}");
            assert_eq!(r.uri, uri);
            assert_eq!(r.method, http::Method::POST);
            assert_eq!(r.version, http::Version::HTTP_2);
            assert_eq!(r.send_end_stream(), Some(false));
            assert!(!r.has_case(), "the case map is gone");
            let wire = request_wire(&r);
            assert_eq!(
                wire,
                "Content-Type: application/json\r\nx-client-thing: a\r\n\
                 x-client-thing: b\r\nx-added: 1\r\n",
            );
        }
    }

    #[test]
    fn a_response_keeps_status_reason_and_values() {
        let mut r = ResponseHeader::build(429, None).expect("head");
        r.set_reason_phrase(Some("Slow Down")).expect("reason");
        r.insert_header("Retry-After", "3").expect("h");
        let n = edit_response(&mut r, 1, |h| {
            h.insert(&X_ADDED, HeaderValue::from_static("1"));
            Ok(h.len())
        })
        .expect("edit");
        assert_eq!(n, 2);
        assert_eq!(r.status, 429);
        assert_eq!(r.get_reason_phrase(), Some("Slow Down"));
        assert_eq!(r.headers.get("retry-after").expect("kept"), "3");
        assert_eq!(r.headers.get(&X_ADDED).expect("added"), "1");
        let mut plain = ResponseHeader::build(200, None).expect("head");
        edit_response(&mut plain, 0, |_| Ok(())).expect("edit");
        assert_eq!(plain.get_reason_phrase(), Some("OK"));
    }

    #[test]
    fn an_error_of_the_edit_is_returned_and_the_head_is_whole() {
        let mut r = parsed(b"/a?b");
        let err = edit_request(&mut r, 0, |h| {
            h.remove("content-type");
            pingora::Error::e_explain::<(), _>(pingora::ErrorType::InvalidHTTPHeader, "bad value")
        });
        assert!(err.is_err());
        assert_eq!(r.raw_path(), b"/a?b");
        assert!(r.headers.get("content-type").is_none());
        assert_eq!(r.headers.get_all("x-client-thing").iter().count(), 2);
    }
}
