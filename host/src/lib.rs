//! Stockade: an MCP host whose tools are sandboxed WebAssembly components.
//!
//! Crate map (see `ARCHITECTURE.md` for the request flow and invariants):
//! - [`cli`]: the command line (`stockade serve`, `stockade plugins inspect`); no logic.
//! - [`config`]: the host configuration: flags, `STOCKADE_*` environment, TOML file.
//! - [`http`]: the axum router: `/mcp` (behind the bearer gate), the OAuth endpoints, `/health`.
//! - [`auth`]: the OAuth 2.1 authorization server, the bearer gate → [`auth::Principal`],
//!   external identity providers; never imports `runtime`, `plugins` or `mcp`.
//! - [`mcp`]: the MCP server handler (rmcp) and the WIT ↔ MCP conversion.
//! - [`plugins`]: discovery and loading of plugin files into the [`plugins::Catalog`].
//! - [`runtime`]: the wasmtime engine, per-call stores, limits and invocation.
//! - [`capabilities`]: the host side of every WIT import (log, progress, client, exec,
//!   sql, outbound HTTP), each deny-by-default.
//! - [`bindings`]: the one `bindgen!` over `../wit`.
//!
//! Invariants: a plugin call always runs in a fresh `Store` built from the plugin's
//! `InstancePre`; only [`capabilities`] reach the outside world on a guest's behalf;
//! a plugin gets no capability unless the operator grants it.

pub mod audit;
pub mod auth;
pub mod bindings;
pub mod call;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod net;
pub mod pgconn;
pub mod plugins;
pub mod runtime;
#[doc(hidden)]
pub mod testing;
