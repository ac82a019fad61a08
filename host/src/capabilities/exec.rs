//! `stockade:plugin/exec`: run an allow-listed host program.
//!
//! Only programs listed in `[[plugins.NAME.grants.exec]]` run, by exact absolute
//! path, with arguments matching the grant's patterns when it has any. The grant,
//! not the guest, decides the rest:
//!
//! - **Environment**: exactly the grant's `env`. A guest variable is accepted only
//!   when the grant's `guest_env` lists its name and its whole value matches the
//!   pattern there; names that make loaders, shells or interpreters run code
//!   (`LD_*`, `BASH_ENV`, `GIT_*`, `PYTHON*`, ...) are refused even then. Any other
//!   guest variable refuses the whole call: nothing runs.
//! - **Working directory**: the grant's `cwd` (default `/`). A guest `cwd` is
//!   accepted only with `guest_cwd = true`, inside one of the plugin's granted
//!   `dirs` (named as the plugin sees it), opened component by component without
//!   following symbolic links, and the program starts in exactly the directory
//!   that was opened.
//! - **Lifetime**: the program runs in its own process group. The whole group is
//!   killed when the program exits, on timeout (the output read so far is
//!   returned), when its output passes the cap, and when the call is dropped
//!   (cancellation, the call's own deadline). A descendant that leaves the group
//!   (`setsid`) escapes this; run Stockade in a cgroup (systemd unit) to bound those
//!   too.
//!
//! No shell is involved unless the operator allow-lists one. A granted program
//! runs with the host process's user rights.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::bindings::exec::{AllowedProgram, Command, Host, Output};
use crate::bindings::types::CapabilityError;
use crate::call::CallContext;
use crate::config::{DirGrant, ExecGrant, forbidden_env_name};

fn args_allowed(grant: &ExecGrant, args: &[String]) -> Result<(), String> {
    let Some(patterns) = &grant.args else {
        return Ok(());
    };
    if patterns.len() != args.len() {
        return Err(format!(
            "`{}` must be called with exactly {} argument(s), got {} (see `grants.exec.args`)",
            grant.program.display(),
            patterns.len(),
            args.len()
        ));
    }
    for (i, (p, a)) in patterns.iter().zip(args).enumerate() {
        if !full_match(p, a)? {
            return Err(format!(
                "argument {} of `{}` (`{}`) does not match the allowed pattern `{p}` \
                 (see `grants.exec.args`)",
                i + 1,
                grant.program.display(),
                shorten(a)
            ));
        }
    }
    Ok(())
}

/// Whether `value` matches the operator's regular expression `pattern` as a whole.
fn full_match(pattern: &str, value: &str) -> Result<bool, String> {
    Ok(crate::config::whole_match_regex(pattern)?.is_match(value))
}

/// At most 200 characters of guest text, for messages.
fn shorten(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The environment of the program: the grant's `env`, plus the guest's variables
/// that `guest_env` allows. Any other guest variable is an error (the call is
/// refused and nothing runs).
fn environment(
    grant: &ExecGrant,
    guest: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let program = grant.program.display();
    let mut env: Vec<(String, String)> = grant
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, value) in guest {
        if let Some(why) = forbidden_env_name(name) {
            return Err(format!(
                "may not set `{}` for `{program}`: a plugin never chooses it ({why})",
                shorten(name)
            ));
        }
        let Some(pattern) = grant.guest_env.get(name) else {
            return Err(format!(
                "may not set `{}` for `{program}`: the program gets only the grant's \
                 environment (let the plugin set it with `grants.exec.guest_env = {{ {} = \"<regex>\" }}`)",
                shorten(name),
                shorten(name)
            ));
        };
        if value.contains('\0') || !full_match(pattern, value)? {
            return Err(format!(
                "may not set `{}` for `{program}` to `{}`: the value does not match the \
                 allowed pattern `{pattern}` (see `grants.exec.guest_env`)",
                shorten(name),
                shorten(value)
            ));
        }
        env.retain(|(k, _)| k != name);
        env.push((name.clone(), value.clone()));
    }
    Ok(env)
}

/// Where the program starts.
enum WorkDir {
    /// A path the operator chose.
    Operator(PathBuf),
    /// A directory inside a granted dir, held open: the program starts in
    /// exactly this directory, whatever happens to the path meanwhile.
    Opened(OwnedFd),
}

/// The working directory: the grant's, or the guest's when the grant allows it
/// and it lies inside one of the plugin's granted directories.
fn work_dir(grant: &ExecGrant, dirs: &[DirGrant], guest: Option<&str>) -> Result<WorkDir, String> {
    let Some(guest) = guest else {
        return Ok(WorkDir::Operator(
            grant.cwd.clone().unwrap_or_else(|| PathBuf::from("/")),
        ));
    };
    let program = grant.program.display();
    if !grant.guest_cwd {
        return Err(format!(
            "may not choose the working directory of `{program}` (`{}`): it is the grant's \
             (set `guest_cwd = true` in its `grants.exec` entry to allow directories inside \
             the plugin's granted `dirs`)",
            shorten(guest)
        ));
    }
    let outside = || {
        format!(
            "may not run `{program}` in `{}`: a working directory must lie inside one of \
             the plugin's granted `dirs` ({}), without `..` or symbolic links",
            shorten(guest),
            dirs.iter()
                .map(|d| d.guest.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    // The granted directory whose guest path is the longest prefix of `guest`.
    let (dir, rest) = dirs
        .iter()
        .filter_map(|d| {
            Path::new(guest)
                .strip_prefix(&d.guest)
                .ok()
                .map(|rest| (d, rest))
        })
        .max_by_key(|(d, _)| d.guest.len())
        .ok_or_else(outside)?;
    let mut components = Vec::new();
    for c in rest.components() {
        match c {
            Component::Normal(name) => components.push(name.to_owned()),
            Component::CurDir => {}
            _ => return Err(outside()),
        }
    }
    open_beneath(&dir.host, &components)
        .map(WorkDir::Opened)
        .map_err(|e| format!("{} ({e})", outside()))
}

/// Opens `root` (the operator's path) and then each of `components` below it,
/// refusing symbolic links (`O_NOFOLLOW`) and anything that is not a directory.
fn open_beneath(root: &Path, components: &[std::ffi::OsString]) -> std::io::Result<OwnedFd> {
    use rustix::fs::{CWD, Mode, OFlags, openat};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut fd = openat(CWD, root, flags, Mode::empty())?;
    for name in components {
        fd = openat(
            &fd,
            name.as_os_str(),
            flags | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
    }
    Ok(fd)
}

/// The process group of a running program; killed (SIGKILL) at most once, and
/// at the latest when this guard is dropped — which covers a call whose future
/// is dropped (cancellation, the call's deadline).
struct ProcessGroup {
    pgid: Option<rustix::process::Pid>,
    killed: AtomicBool,
}

impl ProcessGroup {
    fn new(pid: Option<u32>) -> Self {
        Self {
            pgid: pid
                .and_then(|p| i32::try_from(p).ok())
                .and_then(rustix::process::Pid::from_raw),
            killed: AtomicBool::new(false),
        }
    }

    /// Kills every process in the group (the program and whatever it started
    /// that stayed in the group).
    fn kill(&self) {
        if self.killed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(pgid) = self.pgid {
            // ESRCH (the group is already gone) is the expected outcome often.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Output read from one stream, up to a cap.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// Reads `r` into `out` until its end, keeping at most `cap` bytes; past the cap
/// the process group is killed and reading stops.
async fn read_capped(
    mut r: impl AsyncRead + Unpin,
    cap: usize,
    out: &mut Captured,
    group: &ProcessGroup,
) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(out.bytes.len());
                out.bytes.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    out.truncated = true;
                    group.kill();
                    break;
                }
            }
        }
    }
}

impl CallContext {
    /// Finds the grant for `program`, or the denial message.
    fn exec_grant(&self, program: &str) -> Result<ExecGrant, String> {
        let cx = self;
        if let Some(g) = cx
            .grants
            .exec
            .iter()
            .find(|g| g.program.as_os_str() == program)
        {
            return Ok(g.clone());
        }
        Err(if cx.grants.exec.is_empty() {
            cx.denied(
                &format!("exec (to run `{program}`)"),
                &format!(
                    "[[plugins.{}.grants.exec]] program = \"{program}\"",
                    cx.plugin
                ),
            )
        } else {
            format!(
                "plugin `{}` may not run `{program}`: it is not in its exec allow-list \
                 (allowed: {}; add a `[[plugins.{}.grants.exec]]` entry with program = \"{program}\")",
                cx.plugin,
                cx.grants
                    .exec
                    .iter()
                    .map(|g| g.program.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                cx.plugin,
            )
        })
    }
}

impl Host for CallContext {
    async fn allowed(&mut self) -> Vec<AllowedProgram> {
        self.grants
            .exec
            .iter()
            .map(|g| AllowedProgram {
                program: g.program.display().to_string(),
                args: g.args.clone(),
                timeout_ms: g.timeout_ms,
            })
            .collect()
    }

    async fn run(&mut self, command: Command) -> Result<Output, CapabilityError> {
        let grant = match self.exec_grant(&command.program) {
            Ok(g) => g,
            Err(msg) => return Err(self.deny("exec", msg).await),
        };
        let checked = args_allowed(&grant, &command.args).and_then(|()| {
            Ok((
                environment(&grant, &command.env)?,
                work_dir(&grant, &self.grants.dirs, command.cwd.as_deref())?,
            ))
        });
        let (env, dir) = match checked {
            Ok(v) => v,
            Err(why) => {
                let msg = format!("plugin `{}` was refused: {why}", self.plugin);
                return Err(self.deny("exec", msg).await);
            }
        };
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
            .envs(env)
            .process_group(0)
            .stdin(if command.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match &dir {
            WorkDir::Operator(path) => cmd.current_dir(path),
            // The child changes into the directory through its inherited
            // descriptor (closed on exec), so the opened directory is the one used.
            WorkDir::Opened(fd) => cmd.current_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        };
        let spawned = cmd.spawn();
        drop(dir);
        let mut child = spawned.map_err(|e| {
            CapabilityError::Failed(format!("cannot start `{}`: {e}", command.program))
        })?;
        let group = ProcessGroup::new(child.id());
        tracing::info!(plugin = %self.plugin, program = %command.program, args = ?command.args, "exec");
        if let (Some(input), Some(mut stdin)) = (command.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(CapabilityError::Failed(format!(
                "cannot read the output of `{}`",
                command.program
            )));
        };
        let mut out = Captured::default();
        let mut err = Captured::default();
        let run = async {
            let (status, (), ()) = tokio::join!(
                async {
                    let status = child.wait().await;
                    // Whatever the program left running in its group goes with it,
                    // which also closes the pipes those processes held open.
                    group.kill();
                    status
                },
                read_capped(stdout, cap, &mut out, &group),
                read_capped(stderr, cap, &mut err, &group),
            );
            status
        };
        let finished = tokio::time::timeout(timeout, run).await;
        group.kill();
        let truncated = out.truncated || err.truncated;
        match finished {
            Ok(status) => Ok(Output {
                exit_code: status.ok().and_then(|s| s.code()),
                stdout: out.bytes,
                stderr: err.bytes,
                timed_out: false,
                truncated,
            }),
            Err(_) => {
                // Reap the killed program (bounded: SIGKILL cannot be ignored).
                let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
                let mut stderr = err.bytes;
                if !stderr.is_empty() && !stderr.ends_with(b"\n") {
                    stderr.push(b'\n');
                }
                stderr.extend_from_slice(
                    format!(
                        "killed after {} ms (grants.exec.timeout_ms)",
                        timeout.as_millis()
                    )
                    .as_bytes(),
                );
                Ok(Output {
                    exit_code: None,
                    stdout: out.bytes,
                    stderr,
                    timed_out: true,
                    truncated,
                })
            }
        }
    }
}

#[cfg(test)]
#[path = "exec_props.rs"]
mod props;
#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
