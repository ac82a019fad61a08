//! The template Stockade plugin. Copy this crate, rename it, and replace the
//! tools with your own. Build with `cargo build --release --target wasm32-wasip2`.

use stockade_sdk::prelude::*;

// The arguments of `greet`. Doc comments (`///`) become the schema's descriptions,
// which the model reads; a doc comment on the struct would describe the whole object.
#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    /// Who to greet.
    name: String,
    /// End with an exclamation mark.
    #[serde(default)]
    excited: bool,
}

fn greet(args: GreetArgs, _call: &Call) -> Result<Output, ToolError> {
    let end = if args.excited { "!" } else { "." };
    Ok(Output::text(format!("Hello, {}{end}", args.name)))
}

#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    /// The first number.
    a: f64,
    /// The second number.
    b: f64,
}

// A structured result: clients get it as JSON, described by an output schema.
#[derive(Serialize, JsonSchema)]
struct Sum {
    /// `a + b`.
    sum: f64,
}

fn add(args: AddArgs, _call: &Call) -> Result<Sum, ToolError> {
    Ok(Sum {
        sum: args.a + args.b,
    })
}

fn whoami(_: NoArgs, call: &Call) -> Result<String, ToolError> {
    Ok(format!(
        "subject: {}\nclient: {}",
        call.subject().unwrap_or("(anonymous)"),
        call.client_id().unwrap_or("(unknown)"),
    ))
}

stockade_sdk::plugin! {
    description: "A template plugin: greets, adds, and tells who is calling",
    tools: [
        Tool::new("greet", "Greet someone by name", greet).title("Greet").read_only(),
        Tool::structured("add", "Add two numbers", add).title("Add").read_only().idempotent(),
        Tool::new("whoami", "Tell who is calling: the user and the client", whoami).read_only(),
    ],
}
