// Shared source of the `v1` and `v2` test plugins (each crate `include!`s it):
// the same tool, `which_version`, answering with its crate's name and version,
// so the hot-reload tests can tell which version served a call.

use stockade_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct WhichArgs {
    /// Milliseconds to sleep before answering (keeps a call in flight).
    #[serde(default)]
    sleep_ms: u64,
}

#[derive(Serialize, JsonSchema)]
struct Which {
    /// The crate that answered: `v1` or `v2`.
    name: String,
    /// Its version.
    version: String,
}

fn which_version(args: WhichArgs, _: &Call) -> Result<Output, ToolError> {
    // Half the answer before the pause, half after: a call that somehow moved
    // between versions would mix them.
    let first = Output::text(env!("CARGO_PKG_NAME"));
    std::thread::sleep(std::time::Duration::from_millis(args.sleep_ms.min(10_000)));
    Ok(first
        .with(Output::text(env!("CARGO_PKG_VERSION")))
        .with(Output::json(&Which {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
        })?))
}

stockade_sdk::plugin! {
    description: concat!("Test plugin ", env!("CARGO_PKG_NAME"), ": tells which version answered"),
    tools: [
        Tool::new("which_version", "Answers with the plugin's crate name and version", which_version),
    ],
}
