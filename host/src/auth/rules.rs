//! The pure rules of the authorization server: PKCE, redirect URIs, scopes,
//! origins, HTML escaping. No I/O, so every rule is unit-tested here.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::is_loopback_host;

/// Whether `verifier` matches the S256 `challenge` (RFC 7636 §4.6), in constant
/// time. Verifiers outside 43–128 characters of `[A-Za-z0-9-._~]` never match.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let valid_len = (43..=128).contains(&verifier.len());
    let valid_chars = verifier
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !valid_len || !valid_chars {
        return false;
    }
    let computed = B64.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

/// Whether `challenge` looks like an S256 challenge: 43 base64url characters.
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Schemes that are never acceptable redirect targets.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "ftp",
    "ws",
    "wss",
];

/// Checks a redirect URI offered at registration (or in a client metadata
/// document). Allowed: `https://` anywhere; `http://` only to a loopback host
/// (`localhost`, 127.0.0.0/8, `[::1]`; native apps, RFC 8252 §7.3); private-use
/// schemes of native apps (`com.example.app:/cb`, RFC 8252 §7.1). Never a
/// fragment, user info, or a dangerous scheme.
pub fn check_redirect_uri(uri: &str) -> Result<url::Url, String> {
    if uri.len() > 2000 {
        return Err("redirect URI longer than 2000 characters".into());
    }
    let url = url::Url::parse(uri).map_err(|e| format!("`{uri}` is not an absolute URI: {e}"))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(format!("`{uri}` has a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{uri}` has user information"));
    }
    match url.scheme() {
        "https" if url.host().is_none() => return Err(format!("`{uri}` has no host")),
        "https" => {}
        "http" => match url.host() {
            Some(h) if is_loopback_host(&h) => {}
            _ => {
                return Err(format!(
                    "`{uri}`: plain http is only allowed to loopback hosts (localhost, 127.0.0.1, [::1])"
                ));
            }
        },
        s if FORBIDDEN_SCHEMES.contains(&s) => {
            return Err(format!("`{uri}`: scheme `{s}` is not allowed"));
        }
        // A private-use scheme of a native app.
        _ => {}
    }
    Ok(url)
}

/// Whether `requested` is exactly one of `registered`: byte-for-byte string
/// comparison (RFC 9700 §4.1.1), no normalization, no port or path leeway.
pub fn redirect_uri_matches(requested: &str, registered: &[String]) -> bool {
    registered.iter().any(|r| r == requested)
}

/// The host a redirect URI points at, for the login page ("you will be sent to …").
pub fn redirect_host(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(u) => match u.host_str() {
            Some(h) => match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            },
            None => format!("{}: (an app on this device)", u.scheme()),
        },
        Err(_) => "(invalid)".into(),
    }
}

/// A CSP source expression for where `uri` sends the browser: `scheme://host:port`
/// for URLs with a host, `scheme:` for an app's private-use scheme
/// (`com.example.app:/cb`). `None` when it cannot be expressed safely (a CSP
/// source may not contain spaces, `;` or `,`).
pub fn csp_source(uri: &str) -> Option<String> {
    let u = url::Url::parse(uri).ok()?;
    let source = match u.host_str() {
        Some(host) => match u.port() {
            Some(port) => format!("{}://{host}:{port}", u.scheme()),
            None => format!("{}://{host}", u.scheme()),
        },
        None => format!("{}:", u.scheme()),
    };
    source
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+-.:/[]".contains(&b))
        .then_some(source)
}

/// Splits a space-separated scope string, dropping duplicates (order kept).
pub fn parse_scope(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in s.split(' ').filter(|p| !p.is_empty()) {
        if !out.iter().any(|o| o == p) {
            out.push(p.to_owned());
        }
    }
    out
}

/// `scheme://host:port` of an origin or URL (default ports made explicit), or
/// `None` when it has no host.
pub fn normalize_origin(s: &str) -> Option<String> {
    let u = url::Url::parse(s).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    let port = u.port_or_known_default()?;
    Some(format!("{}://{}:{}", u.scheme(), host, port))
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `base` with `params` appended to its query (existing parameters kept).
pub fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => base.to_owned(),
    }
}

/// Compares two secrets' sha256 hex digests in constant time.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
#[path = "rules_props.rs"]
mod props;
#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
