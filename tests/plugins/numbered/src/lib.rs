//! Test plugin for the reload benchmark: one tool named `numbered_tool_000`.
//!
//! `host/benches/reload.rs` makes 100 distinct components out of this one by
//! rewriting the fixed-width name in the binary (`numbered_tool_000` →
//! `numbered_tool_042`, same length), so each copy has its own sha256 (compiled
//! and cached separately) and its own tool name (all of them serve).

use stockade_sdk::prelude::*;

/// The placeholder the benchmark rewrites; keep it 17 bytes and unique.
const NAME: &str = "numbered_tool_000";

fn answer(_: NoArgs, _: &Call) -> Result<String, ToolError> {
    Ok(NAME.into())
}

stockade_sdk::plugin! {
    description: "Benchmark plugin: one tool, patched into 100 distinct copies",
    tools: [
        Tool::new(NAME, "Answers with its own name", answer),
    ],
}
