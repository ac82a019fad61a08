//! `shell`: `run_command` for the programs the operator allow-lists through the
//! host's `exec` grant, and `list_allowed_commands` to tell the model which.
//!
//! The command line is split into words as a POSIX shell would (quotes and
//! backslashes), but no shell runs it unless the operator grants one: `df -h /`
//! runs `/usr/bin/df` with `-h` and `/`. The program is the grant's exact path,
//! or a bare name matched against the file names of the granted programs. The
//! host checks every argument against the grant's patterns and enforces its
//! timeout and output cap. The result has the shape the seeds' `run_command`
//! answers with (`exitCode`, `stdout`, `stderr`, `timedOut`), so existing
//! prompts keep working; a non-zero exit is an error result.

use std::time::{Duration, Instant};

use stockade_sdk::exec::{self, AllowedProgram};
use stockade_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct RunArgs {
    /// The command line, e.g. `df -h /` or `systemctl status nginx`. Split into
    /// words like a shell would; pipes, redirections and `$VARS` are not
    /// interpreted (unless the operator granted a shell, e.g. `bash -c '...'`).
    command: String,
    /// Seconds to wait before the program is killed (at most the operator's limit).
    #[serde(default)]
    timeout_seconds: Option<u32>,
}

/// The allowed programs, one line each, for the model.
fn describe(allowed: &[AllowedProgram]) -> String {
    if allowed.is_empty() {
        return "no program is allowed: the operator grants programs with \
                `[[plugins.shell.grants.exec]]` entries (program = \"/usr/bin/df\", \
                args = [\"-h\"]) in the host config"
            .to_owned();
    }
    allowed
        .iter()
        .map(|a| match &a.args {
            None => format!("{} (any arguments)", a.name()),
            Some(args) if args.is_empty() => format!("{} (no arguments)", a.name()),
            Some(args) => format!(
                "{} with exactly {} argument{} matching {}",
                a.name(),
                args.len(),
                if args.len() == 1 { "" } else { "s" },
                args.iter()
                    .map(|p| format!("/{p}/"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn list_allowed_commands(_: NoArgs, _: &Call) -> Result<String, ToolError> {
    let allowed = exec::allowed();
    let text = describe(&allowed);
    if allowed.is_empty() {
        return Ok(text);
    }
    Ok(format!("Programs you may run with run_command:\n{text}"))
}

fn run_command(args: RunArgs, _: &Call) -> Result<Output, ToolError> {
    let words = shell_words::split(&args.command).map_err(|e| {
        ToolError::invalid_arguments(format!("`command` cannot be split into words: {e}"))
    })?;
    let Some((name, rest)) = words.split_first() else {
        return Err(ToolError::invalid_arguments("`command` is empty"));
    };
    let allowed = exec::allowed();
    let program = allowed
        .iter()
        .find(|a| a.program == *name || (!name.contains('/') && a.name() == name));
    let Some(program) = program else {
        return Ok(Output::error(format!(
            "`{name}` is not an allowed program. Allowed:\n{}",
            describe(&allowed)
        )));
    };
    let mut cmd = exec::Command::new(program.program.clone()).args(rest.iter().cloned());
    if let Some(t) = args.timeout_seconds {
        cmd = cmd.timeout(Duration::from_secs(u64::from(t.max(1))));
    }
    let started = Instant::now();
    let out = match cmd.run() {
        Ok(out) => out,
        // The host's sentence (arguments outside the grant's patterns, say).
        Err(e) => {
            return Ok(Output::error(format!(
                "{e}\nAllowed:\n{}",
                describe(&allowed)
            )));
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let note = if out.timed_out {
        Some(
            "the program ran past its time limit and was stopped; ask for less, or a longer timeout_seconds within the operator's limit",
        )
    } else if out.truncated {
        Some(
            "the output passed the operator's cap (max_output_kib): the rest was discarded and the program stopped; ask for less output",
        )
    } else {
        None
    };
    let mut result = stockade_sdk::serde_json::json!({
        "command": words,
        "exitCode": out.exit_code,
        "timedOut": out.timed_out,
        "truncated": out.truncated,
        "durationMs": duration_ms,
        "stdout": out.stdout_str(),
        "stderr": out.stderr_str(),
    });
    if let Some(note) = note {
        result["note"] = note.into();
    }
    let text = stockade_sdk::serde_json::to_string_pretty(&result)
        .map_err(|e| ToolError::failed(format!("cannot encode the result: {e}")))?;
    Ok(if out.success() {
        Output::text(text)
    } else {
        Output::error(text)
    })
}

stockade_sdk::plugin! {
    description: "Runs the programs the operator allow-lists (no shell unless one is granted)",
    capabilities: { exec: ["/usr/bin/uptime", "/usr/bin/df", "/usr/bin/free"] },
    tools: [
        Tool::new(
            "run_command",
            "Run an allowed program on the server and get its stdout, stderr, exit code and duration \
             (an error result when the exit code is not 0). The command line is split into words; \
             there is no shell, so pipes and redirections do not work. Call list_allowed_commands \
             first to see which programs and arguments the operator allows.",
            run_command,
        )
        .title("Run command")
        .destructive()
        .open_world(),
        Tool::new(
            "list_allowed_commands",
            "List the programs run_command may run and the arguments each accepts, from the \
             operator's current grant",
            list_allowed_commands,
        )
        .read_only(),
    ],
}
