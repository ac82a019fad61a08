//! Test plugin: a guest that tries to take over a granted program through
//! what it controls in an `exec` call — environment variables (`LD_PRELOAD`,
//! `BASH_ENV`, `GIT_CONFIG_*`), the working directory, the timeout — and that
//! leaves processes behind. Driven by `tests/sandbox_exec_sql.rs`.
//!
//! The tool returns `ERR:<error>` for a refused call, or
//! `OK:exit=<code>;timed_out=<bool>;truncated=<bool>` followed by a newline,
//! the program's stdout, a line `--stderr--` and its stderr.

use std::collections::BTreeMap;
use std::time::Duration;

use stockade_sdk::exec::Command;
use stockade_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct RunArgs {
    /// Absolute program path.
    program: String,
    /// Arguments.
    #[serde(default)]
    args: Vec<String>,
    /// Environment variables the guest asks for.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory the guest asks for.
    cwd: Option<String>,
    /// Timeout the guest asks for, in milliseconds.
    timeout_ms: Option<u64>,
}

fn run(args: RunArgs, _: &Call) -> Result<String, ToolError> {
    let mut cmd = Command::new(&args.program).args(args.args);
    for (k, v) in args.env {
        cmd = cmd.env(k, v);
    }
    if let Some(dir) = args.cwd {
        cmd = cmd.cwd(dir);
    }
    if let Some(ms) = args.timeout_ms {
        cmd = cmd.timeout(Duration::from_millis(ms));
    }
    Ok(match cmd.run() {
        Ok(out) => format!(
            "OK:exit={};timed_out={};truncated={}\n{}--stderr--\n{}",
            out.exit_code.map_or("none".into(), |c| c.to_string()),
            out.timed_out,
            out.truncated,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        ),
        Err(e) => format!("ERR:{e}"),
    })
}

stockade_sdk::plugin! {
    description: "Hostile test plugin: attacks through exec",
    tools: [
        Tool::new("run", "Runs a host program with the guest's env, cwd and timeout", run),
    ],
}
