//! `GET /`: a small page for a person who opens the server's address in a
//! browser: what this is, the URL to give an MCP client, where health and docs are.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

/// The page, for a server whose public URL is `public_url` (no trailing slash).
pub fn page(public_url: &str) -> Response {
    let mcp = html_escape(&format!("{public_url}/mcp"));
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Stockade</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}code{{background:#eee;padding:.1rem .3rem}}</style>
</head><body>
<h1>Stockade</h1>
<p>This is an <a href="https://modelcontextprotocol.io">MCP</a> server: it gives AI clients
(Claude, IDEs, agents) tools that run in sandboxed WebAssembly plugins.</p>
<p>Give your MCP client this URL (Streamable HTTP):<br><code>{mcp}</code></p>
<p>It will ask you to log in once in your browser.</p>
<p><a href="/health">Health</a> ·
<a href="/.well-known/oauth-protected-resource">OAuth metadata</a> ·
<a href="https://github.com/stockade-dev/stockade">Documentation</a></p>
</body></html>
"#
    );
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Html(body),
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
