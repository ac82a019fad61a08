//! Test plugin: `greet` clashes with the template plugin's tool of that name.

use stockade_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    /// Who to greet.
    name: String,
}

stockade_sdk::plugin! {
    description: "Test plugin with a tool name that clashes with the template plugin",
    tools: [
        Tool::new("greet", "Greet someone (from the dup plugin)", |args: GreetArgs, _: &Call| {
            Ok::<_, ToolError>(format!("Hello from dup, {}.", args.name))
        }),
        Tool::new("dup_only", "A tool only the dup plugin has", |_: NoArgs, _: &Call| {
            Ok::<_, ToolError>("dup_only")
        }),
    ],
}
