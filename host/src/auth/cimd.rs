//! Client ID Metadata Documents: a `client_id` that is an https URL names a JSON
//! document (the client's metadata) which the server fetches.
//!
//! Fetching a URL a stranger chose is a server-side request forgery risk, so:
//! https only, no redirects, 5 s timeout, 64 KiB at most, and the host's
//! addresses are resolved first and refused when any is loopback, private,
//! link-local or otherwise non-public (unless `auth.allow_cimd_private_networks`);
//! the connection then goes to the checked address only (no second lookup).
//! The document's `client_id` must equal the URL exactly. Documents are cached
//! for five minutes, at most [`MAX_CACHED`] of them (the oldest fetch makes
//! room; expired ones are swept periodically).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::register::{ClientMetadata, validate_metadata};

/// Largest document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 10;
const TIMEOUT: Duration = Duration::from_secs(5);
const CACHE_FOR: Duration = Duration::from_secs(300);
/// Documents cached at once.
pub const MAX_CACHED: usize = 256;

/// A client known from its metadata document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataClient {
    /// The URL (= client id).
    pub client_id: String,
    /// Its display name.
    pub client_name: Option<String>,
    /// Its redirect URIs.
    pub redirect_uris: Vec<String>,
}

/// Fetches and caches metadata documents.
pub struct Fetcher {
    allow_private: bool,
    cap: usize,
    cache: Mutex<HashMap<String, (Instant, MetadataClient)>>,
}

/// Whether `client_id` is meant as a metadata document URL.
pub fn is_metadata_url(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

pub use crate::net::is_public;

/// Checks the URL form of a metadata client id.
pub fn check_url(client_id: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(client_id).map_err(|e| format!("client_id is not a URL: {e}"))?;
    if u.scheme() != "https" {
        return Err("a client_id URL must use https".into());
    }
    if u.host().is_none()
        || !u.username().is_empty()
        || u.password().is_some()
        || u.fragment().is_some()
    {
        return Err("a client_id URL needs a host and no user info or fragment".into());
    }
    if u.path() == "/" || u.path().split('/').any(|seg| seg == "." || seg == "..") {
        return Err("a client_id URL needs a path without dot segments".into());
    }
    Ok(u)
}

/// Validates a fetched document against the URL it came from.
pub fn parse_document(client_id: &str, body: &[u8]) -> Result<MetadataClient, String> {
    let meta: ClientMetadata = serde_json::from_slice(body)
        .map_err(|e| format!("client metadata document is not valid JSON: {e}"))?;
    if meta.client_id.as_deref() != Some(client_id) {
        return Err("the document's client_id does not equal its URL".into());
    }
    if let Some(m) = &meta.token_endpoint_auth_method
        && m != "none"
    {
        return Err(format!(
            "token_endpoint_auth_method `{m}` is not supported for metadata-document clients"
        ));
    }
    let (client_name, redirect_uris) = validate_metadata(&meta).map_err(|(_, e)| e)?;
    Ok(MetadataClient {
        client_id: client_id.to_owned(),
        client_name,
        redirect_uris,
    })
}

impl Fetcher {
    /// A fetcher; `allow_private` lifts the address check.
    pub fn new(allow_private: bool) -> Self {
        Self::with_capacity(allow_private, MAX_CACHED)
    }

    /// A fetcher caching at most `cap` documents (≥ 1).
    pub fn with_capacity(allow_private: bool, cap: usize) -> Self {
        Fetcher {
            allow_private,
            cap: cap.max(1),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Drops expired documents from the cache.
    pub fn sweep(&self) {
        self.cache
            .lock()
            .expect("cimd cache")
            .retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
    }

    /// Caches `client`, making room when full: expired entries first, then the
    /// oldest fetch.
    fn remember(&self, client: &MetadataClient) {
        let mut cache = self.cache.lock().expect("cimd cache");
        if cache.len() >= self.cap && !cache.contains_key(&client.client_id) {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
            if cache.len() >= self.cap
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(client.client_id.clone(), (Instant::now(), client.clone()));
    }

    /// Documents cached.
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.lock().expect("cimd cache").len()
    }

    /// The client behind `client_id` (an https URL), fetched or cached.
    pub async fn get(&self, client_id: &str) -> Result<MetadataClient, String> {
        if let Some((at, c)) = self.cache.lock().expect("cimd cache").get(client_id)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(c.clone());
        }
        let client = self.fetch(client_id).await?;
        self.remember(&client);
        Ok(client)
    }

    async fn fetch(&self, client_id: &str) -> Result<MetadataClient, String> {
        let url = check_url(client_id)?;
        let host = url
            .host_str()
            .ok_or("no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
                .await
                .map_err(|_| "resolving the client_id host timed out".to_owned())?
                .map_err(|e| format!("cannot resolve the client_id host: {e}"))?
                .collect();
        let Some(first) = addrs.first().copied() else {
            return Err("the client_id host has no address".into());
        };
        if !self.allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
            return Err(format!(
                "the client_id host resolves to a non-public address ({}); refused \
                 (auth.allow_cimd_private_networks)",
                first.ip()
            ));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .resolve(&host, first)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let mut resp = http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("fetching the client metadata document failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!(
                "fetching the client metadata document: HTTP {}",
                resp.status().as_u16()
            ));
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > MAX_DOCUMENT_BYTES)
        {
            return Err("the client metadata document is larger than 64 KiB".into());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the document: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err("the client metadata document is larger than 64 KiB".into());
            }
        }
        parse_document(client_id, &body)
    }
}

#[cfg(test)]
#[path = "cimd_tests.rs"]
mod tests;
