//! Outbound HTTP, a small blocking client over `wasi:http/outgoing-handler`.
//!
//! Needs a grant: the operator allow-lists the hosts a plugin may reach. A
//! request to any other host fails with an error for which
//! [`Error::is_denied`] is true.
//!
//! ```
//! use stockade_sdk::http::Request;
//!
//! # fn f() -> Result<(), stockade_sdk::http::Error> {
//! let resp = Request::get("https://api.example.com/v1/status")
//!     .header("accept", "application/json")
//!     .send()?;
//! if resp.status == 200 {
//!     println!("{}", resp.text());
//! }
//! # Ok(()) }
//! ```
//!
//! For streaming or anything this wrapper does not cover, use the raw WASI
//! bindings in [`crate::wasi::http`].

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// Sends one request and reads the whole response: `fetch("GET", url, &[], b"")`.
pub fn fetch(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, Error> {
    let mut request = Request::new(method, url).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send()
}

/// An HTTP request under construction.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with any method (`GET`, `POST`, ...).
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and the `content-type` header.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::new(&self.url, format!("cannot encode the body: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Limits the time to connect, to the first byte, and between bytes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(&self) -> Result<Response, Error> {
        let err = |message: String| Error::new(&self.url, message);
        let url = parse_url(&self.url).map_err(err)?;

        let headers =
            Fields::from_list(&self.headers).map_err(|e| err(format!("invalid header: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let method = match self.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            _ => Method::Other(self.method.clone()),
        };
        let invalid = |what: &str| err(format!("invalid {what}"));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&url.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(url.authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(&url.path_with_query))
            .map_err(|()| invalid("path"))?;
        let body = request.body().map_err(|()| err("no request body".into()))?;

        let options = self.timeout.map(|t| {
            let nanos = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let options = RequestOptions::new();
            // A host that does not support a timeout refuses it; that is fine.
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });
        let future =
            outgoing_handler::handle(request, options).map_err(|e| Error::code(&self.url, e))?;

        {
            let stream = body
                .write()
                .map_err(|()| err("cannot write the body".into()))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| err(format!("cannot send the body: {}", stream_error(e))))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| Error::code(&self.url, e))?;

        let response = loop {
            match future.get() {
                Some(result) => break result,
                None => future.subscribe().block(),
            }
        };
        let response = response
            .map_err(|()| err("the response was already taken".into()))?
            .map_err(|e| Error::code(&self.url, e))?;

        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response
            .consume()
            .map_err(|()| err("no response body".into()))?;
        let mut bytes = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| err("no response body".into()))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(e) => {
                        return Err(err(format!(
                            "cannot read the response: {}",
                            stream_error(e)
                        )));
                    }
                }
            }
        }
        drop(IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers (names in lower case), in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header named `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v))
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body decoded from JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Why an HTTP request failed (a status such as 404 is not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    url: String,
    message: String,
    denied: bool,
}

impl Error {
    fn new(url: &str, message: String) -> Self {
        Self {
            url: url.to_owned(),
            message,
            denied: false,
        }
    }

    fn code(url: &str, code: ErrorCode) -> Self {
        let denied = matches!(
            code,
            ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited
        );
        let message = describe(&code);
        Self {
            denied,
            ..Self::new(url, message)
        }
    }

    /// Whether the Stockade host refused the request because the operator has not
    /// granted it (a host, method or private address outside the grant).
    pub fn is_denied(&self) -> bool {
        self.denied
    }

    /// The URL of the failed request.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP request to {} failed: {}", self.url, self.message)
    }
}

impl std::error::Error for Error {}

/// A sentence for a `wasi:http` error code: what happened and, where the
/// operator's grant decides it, which key would change it.
fn describe(code: &ErrorCode) -> String {
    let s = |m: &str| m.to_owned();
    match code {
        ErrorCode::HttpRequestDenied => s(
            "the Stockade host refused it: the operator has not granted this host, port or \
             method to the plugin (`grants.http.hosts` / `grants.http.methods` under \
             `[plugins.NAME]` in the host config)",
        ),
        ErrorCode::DestinationIpProhibited => s(
            "the Stockade host refused it: the name resolves to a loopback, private or \
             link-local address, which plugins may not reach unless the operator sets \
             `grants.http.allow_private = true`",
        ),
        ErrorCode::DnsTimeout => s("looking up the host name timed out"),
        ErrorCode::DnsError(_) => s("the host name could not be resolved (DNS); check the URL"),
        ErrorCode::DestinationNotFound => s("the host name has no address; check the URL"),
        ErrorCode::DestinationUnavailable | ErrorCode::DestinationIpUnroutable => {
            s("the server cannot be reached from this host (unreachable network)")
        }
        ErrorCode::ConnectionRefused => {
            s("the server refused the connection (nothing listens on that port)")
        }
        ErrorCode::ConnectionTerminated => s("the server closed the connection early"),
        ErrorCode::ConnectionTimeout => {
            s("connecting timed out (the longest wait is the operator's `grants.http.timeout_ms`)")
        }
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => s(
            "the server did not answer in time (the longest wait is the operator's \
             `grants.http.timeout_ms`)",
        ),
        ErrorCode::ConnectionWriteTimeout => s("sending the request timed out"),
        ErrorCode::ConnectionLimitReached => s("too many open connections; try again later"),
        ErrorCode::TlsProtocolError => s("the TLS handshake failed"),
        ErrorCode::TlsCertificateError => {
            s("the server's TLS certificate is not valid for this name or not trusted")
        }
        ErrorCode::TlsAlertReceived(a) => format!(
            "the server ended the TLS handshake ({})",
            a.alert_message.as_deref().unwrap_or("no reason given")
        ),
        ErrorCode::HttpRequestMethodInvalid => s("the request method is not valid"),
        ErrorCode::HttpRequestUriInvalid => s("the URL is not valid"),
        ErrorCode::HttpRequestUriTooLong => s("the URL is too long"),
        ErrorCode::HttpResponseIncomplete => s("the server's response ended early"),
        ErrorCode::HttpResponseBodySize(_) => s("the response body is too large"),
        ErrorCode::HttpProtocolError => s("the server's answer is not valid HTTP"),
        ErrorCode::LoopDetected => s("the request loops back to itself"),
        ErrorCode::InternalError(Some(m)) => format!("internal error: {m}"),
        other => format!("{other:?}"),
    }
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "the stream closed".to_owned(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

struct Url<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_with_query: String,
}

fn parse_url(url: &str) -> Result<Url<'_>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "the URL has no scheme (expected http:// or https://)".to_owned())?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => Scheme::Other(scheme.to_owned()),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err("the URL has no host".to_owned());
    }
    Ok(Url {
        scheme,
        authority,
        path_with_query: if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://example.com:8443/a/b?c=d#frag").unwrap();
        assert!(matches!(u.scheme, Scheme::Https));
        assert_eq!(u.authority, "example.com:8443");
        assert_eq!(u.path_with_query, "/a/b?c=d");
        let u = parse_url("http://example.com").unwrap();
        assert_eq!(u.path_with_query, "/");
        let u = parse_url("http://example.com?q").unwrap();
        assert_eq!((u.authority, &*u.path_with_query), ("example.com", "/?q"));
        assert!(parse_url("example.com/x").is_err());
        assert!(parse_url("http:///x").is_err());
    }
}
