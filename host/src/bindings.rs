//! The single `bindgen!` over the WIT contract in `../wit` (world `plugin`).
//!
//! WASI interfaces are not generated here: they come from `wasmtime-wasi` and
//! `wasmtime-wasi-http`, which also implement them. Everything else that touches
//! the generated code goes through this module, so a wasmtime upgrade that changes
//! the generator is absorbed here and in [`crate::runtime`].
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi": wasmtime_wasi::p2::bindings,
    },
});

pub use self::exports::stockade::plugin::prompts as guest_prompts;
pub use self::exports::stockade::plugin::resources as guest_resources;
pub use self::exports::stockade::plugin::tools as guest_tools;
pub use self::stockade::plugin::{client, events, exec, log, metrics, progress, sql, types};

/// The fully qualified names of the interfaces a plugin exports, for messages.
pub mod names {
    /// The required `tools` export.
    pub const TOOLS: &str = "stockade:plugin/tools@0.1.0";
    /// The optional `resources` export.
    pub const RESOURCES: &str = "stockade:plugin/resources@0.1.0";
    /// The optional `prompts` export.
    pub const PROMPTS: &str = "stockade:plugin/prompts@0.1.0";
}
