//! `stockade:plugin/exec`: run an allow-listed host program.
//!
//! Only programs listed in `[[plugins.NAME.grants.exec]]` run, by exact absolute
//! path, with arguments matching the grant's patterns when it has any. The program
//! gets only the grant's environment plus the call's, the grant's working
//! directory, a timeout (killed past it) and capped output. No shell is involved
//! unless the operator allow-lists one. A granted program runs with the host
//! process's user rights.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::bindings::exec::{Command, Host, Output};
use crate::bindings::types::CapabilityError;
use crate::config::ExecGrant;
use crate::runtime::CallState;

fn args_allowed(grant: &ExecGrant, args: &[String]) -> Result<(), String> {
    let Some(patterns) = &grant.args else {
        return Ok(());
    };
    if patterns.len() != args.len() {
        return Err(format!(
            "`{}` must be called with exactly {} argument(s), got {}",
            grant.program.display(),
            patterns.len(),
            args.len()
        ));
    }
    for (i, (p, a)) in patterns.iter().zip(args).enumerate() {
        let re = regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| e.to_string())?;
        if !re.is_match(a) {
            return Err(format!(
                "argument {} of `{}` (`{}`) does not match the allowed pattern `{p}`",
                i + 1,
                grant.program.display(),
                a.chars().take(200).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// Reads `r` to the end, keeping at most `cap` bytes; true if more was discarded.
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

impl Host for CallState {
    async fn run(&mut self, command: Command) -> Result<Output, CapabilityError> {
        let cx = &self.cx;
        let grant = cx
            .grants
            .exec
            .iter()
            .find(|g| g.program.as_os_str() == command.program.as_str())
            .cloned();
        let Some(grant) = grant else {
            let msg = if cx.grants.exec.is_empty() {
                cx.denied(
                    &format!("exec (to run `{}`)", command.program),
                    &format!(
                        "[[plugins.{}.grants.exec]] program = \"{}\"",
                        cx.plugin, command.program
                    ),
                )
            } else {
                format!(
                    "plugin `{}` may not run `{}`: it is not in its exec allow-list (allowed: {}; \
                     add a `[[plugins.{}.grants.exec]]` entry with program = \"{}\")",
                    cx.plugin,
                    command.program,
                    cx.grants
                        .exec
                        .iter()
                        .map(|g| g.program.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    cx.plugin,
                    command.program
                )
            };
            return Err(cx.deny("exec", msg).await);
        };
        if let Err(why) = args_allowed(&grant, &command.args) {
            let msg = format!(
                "plugin `{}` was refused: {why} (see `grants.exec.args`)",
                cx.plugin
            );
            return Err(cx.deny("exec", msg).await);
        }
        let timeout = Duration::from_millis(
            command
                .timeout_ms
                .map(u64::from)
                .map_or(grant.timeout_ms, |t| t.min(grant.timeout_ms)),
        );
        let cap = (grant.max_output_kib as usize) << 10;
        let mut cmd = tokio::process::Command::new(&grant.program);
        cmd.args(&command.args)
            .env_clear()
            .envs(&grant.env)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(if command.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match command
            .cwd
            .as_deref()
            .map(std::path::PathBuf::from)
            .or(grant.cwd.clone())
        {
            Some(dir) => {
                cmd.current_dir(dir);
            }
            None => {
                cmd.current_dir("/");
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            CapabilityError::Failed(format!("cannot start `{}`: {e}", command.program))
        })?;
        tracing::info!(plugin = %cx.plugin, program = %command.program, args = ?command.args, "exec");
        if let (Some(input), Some(mut stdin)) = (command.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let out = read_capped(child.stdout.take().expect("piped"), cap);
        let err = read_capped(child.stderr.take().expect("piped"), cap);
        let run = async {
            let ((stdout, t1), (stderr, t2)) = tokio::join!(out, err);
            let status = child.wait().await;
            (stdout, stderr, t1 || t2, status)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok((stdout, stderr, truncated, status)) => Ok(Output {
                exit_code: status.ok().and_then(|s| s.code()),
                stdout,
                stderr,
                timed_out: false,
                truncated,
            }),
            Err(_) => Ok(Output {
                exit_code: None,
                stdout: Vec::new(),
                stderr: format!(
                    "killed after {} ms (grants.exec.timeout_ms)",
                    timeout.as_millis()
                )
                .into_bytes(),
                timed_out: true,
                truncated: false,
            }),
        }
    }
}
