//! The host side of every capability a plugin can import, one module each.
//!
//! Each capability is deny-by-default: without the operator's grant a call returns
//! a typed `denied` error (never a trap) whose message names the plugin, the
//! capability and the config key that would grant it. Only this module reaches the
//! outside world on a guest's behalf.
//!
//! A capability talks to the MCP client of the current call through [`ClientLink`],
//! which the MCP layer implements: capabilities never import rmcp.

pub mod client;
pub mod events;
pub mod exec;
pub mod fs_guard;
pub mod http;
pub mod log;
pub mod metrics;
pub mod progress;
pub mod sql;

pub use crate::call::{CallContext, ClientLink, LinkError, LinkFuture, LogLevel};

impl crate::bindings::types::Host for CallContext {}
