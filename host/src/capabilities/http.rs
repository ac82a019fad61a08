//! Outbound HTTP (`wasi:http/outgoing-handler`): the policy every request passes.
//!
//! A request leaves only when its host matches the plugin's allow-list (exact
//! name or `*.domain` for subdomains, and the port), its method is allowed, and
//! every address the name resolves to is public — loopback, private, link-local,
//! CGNAT, multicast and unspecified addresses are refused unless the grant sets
//! `allow_private`. The check happens before any connection; with no grant every
//! request is refused before DNS. Plugins get no raw sockets and no DNS.
//!
//! Residual risk, documented for operators: the address check and the connection
//! resolve the name separately, so an allow-listed name whose DNS the attacker
//! controls could rebind between the two; TLS certificate validation still
//! applies to `https` URLs.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::{HostPattern, HttpGrant};

/// Whether `ip` is an address a sandboxed plugin must not reach without
/// `allow_private`.
pub fn is_non_public(ip: IpAddr) -> bool {
    !crate::net::is_public(ip)
}

/// The outbound HTTP policy of one call.
pub struct HttpPolicy {
    plugin: String,
    grant: Option<(Vec<HostPattern>, HttpGrant)>,
    /// Refusals during this call, reported to the audit log after it.
    pub denials: Arc<Mutex<Vec<String>>>,
}

impl HttpPolicy {
    /// The policy for `plugin` under `grant` (none: refuse everything).
    pub fn new(plugin: String, grant: Option<&HttpGrant>) -> Self {
        let grant = grant.map(|g| {
            let patterns = g
                .hosts
                .iter()
                .filter_map(|h| HostPattern::parse(h).ok())
                .collect();
            (patterns, g.clone())
        });
        Self {
            plugin,
            grant,
            denials: Arc::default(),
        }
    }

    /// Checks method, host and port; the DNS check comes later, in the request.
    fn check(&self, method: &str, host: &str, port: u16) -> Result<(), String> {
        let Some((patterns, grant)) = &self.grant else {
            return Err(format!(
                "plugin `{}` may not make HTTP requests: the operator has not granted it \
                 (grant it with `grants.http.hosts = [\"{host}\"]` under `[plugins.{}]` in the host config)",
                self.plugin, self.plugin
            ));
        };
        if !patterns.iter().any(|p| p.matches(host, port)) {
            return Err(format!(
                "plugin `{}` may not reach {host}:{port}: it is not in its allow-list \
                 (add it to `grants.http.hosts` under `[plugins.{}]`)",
                self.plugin, self.plugin
            ));
        }
        if !grant.methods.is_empty()
            && !grant.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        {
            return Err(format!(
                "plugin `{}` may not send {method} requests (allowed: {}; see `grants.http.methods`)",
                self.plugin,
                grant.methods.join(", ")
            ));
        }
        Ok(())
    }
}

/// The guest's request options with every timeout at most the grant's `limit`
/// (and `limit` where the guest set none): a plugin can shorten a timeout, never
/// lengthen it.
fn clamp_timeouts(options: Option<RequestOptions>, limit: Duration) -> RequestOptions {
    let clamp = |t: Option<Duration>| Some(t.map_or(limit, |t| t.min(limit)));
    let options = options.unwrap_or_default();
    RequestOptions {
        connect_timeout: clamp(options.connect_timeout),
        first_byte_timeout: clamp(options.first_byte_timeout),
        between_bytes_timeout: clamp(options.between_bytes_timeout),
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: ::http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(::http::Response<WasiBody>, IoFuture), HttpError>> + Send>
    {
        let uri = request.uri().clone();
        let host = uri.host().unwrap_or_default().to_owned();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if let Err(why) = self.check(request.method().as_str(), &host, port) {
            tracing::warn!(plugin = %self.plugin, %uri, "outbound HTTP denied: {why}");
            self.denials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(why);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let allow_private = self.grant.as_ref().is_some_and(|(_, g)| g.allow_private);
        let timeout = self
            .grant
            .as_ref()
            .map(|(_, g)| g.timeout_ms)
            .filter(|t| *t > 0)
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(30));
        let plugin = self.plugin.clone();
        let denials = self.denials.clone();
        Box::new(async move {
            let target = format!(
                "{}:{port}",
                host.trim_start_matches('[').trim_end_matches(']')
            );
            let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(target).await {
                Ok(a) => a.collect(),
                Err(_) => {
                    return Err(HttpError::DnsError {
                        rcode: None,
                        info_code: None,
                    });
                }
            };
            if addrs.is_empty() {
                return Err(HttpError::DestinationNotFound);
            }
            if !allow_private && let Some(bad) = addrs.iter().find(|a| is_non_public(a.ip())) {
                denials.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                    "plugin `{plugin}` may not reach {host} ({}): a non-public address \
                     (set `grants.http.allow_private = true` under `[plugins.{plugin}]` to allow it)",
                    bad.ip()
                ));
                tracing::warn!(
                    plugin = %plugin, %uri, addr = %bad.ip(),
                    "outbound HTTP denied: {host} resolves to a non-public address (grants.http.allow_private)"
                );
                return Err(HttpError::DestinationIpProhibited);
            }
            let options = clamp_timeouts(options, timeout);
            let (res, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            use http_body_util::BodyExt;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as IoFuture))
        })
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
