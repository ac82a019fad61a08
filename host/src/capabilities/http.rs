//! Outbound HTTP (`wasi:http/outgoing-handler`): the policy every request passes.
//!
//! With no allow-list (the default) every request is refused before any
//! connection or DNS lookup is made.

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The outbound HTTP policy of one call.
pub struct HttpPolicy {
    plugin: String,
}

impl HttpPolicy {
    /// A policy that refuses every request.
    pub fn deny_all(plugin: String) -> Self {
        Self { plugin }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: ::http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(::http::Response<WasiBody>, IoFuture), HttpError>> + Send>
    {
        tracing::warn!(
            plugin = %self.plugin,
            uri = %request.uri(),
            "outbound HTTP denied: no hosts granted (grants.http.hosts)"
        );
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}
