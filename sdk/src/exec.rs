//! Run a program on the host, outside the sandbox.
//!
//! Needs a grant: the operator allow-lists absolute program paths
//! (`[plugins.NAME.grants.exec]`). Without one, or for a program outside the
//! list, [`Command::run`] returns [`CapabilityError::Denied`]. No shell is
//! involved unless a shell is the allow-listed program.
//!
//! ```
//! use std::time::Duration;
//! use stockade_sdk::exec::Command;
//!
//! # fn f() -> Result<(), stockade_sdk::CapabilityError> {
//! let out = Command::new("/usr/bin/df")
//!     .arg("-h")
//!     .timeout(Duration::from_secs(5))
//!     .run()?;
//! if out.success() {
//!     println!("{}", out.stdout_str());
//! }
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::time::Duration;

use crate::CapabilityError;
use crate::bindings::stockade::plugin::exec as wit;

/// A program to run, built up like [`std::process::Command`].
#[derive(Debug, Clone)]
pub struct Command {
    inner: wit::Command,
}

impl Command {
    /// Runs `program`: an absolute path, exactly as allow-listed.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            inner: wit::Command {
                program: program.into(),
                args: Vec::new(),
                cwd: None,
                env: Vec::new(),
                stdin: None,
                timeout_ms: None,
            },
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.inner.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inner.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable. The grant must list the name in its
    /// `guest_env` with a pattern the value matches; otherwise [`Command::run`]
    /// returns [`CapabilityError::Denied`] and nothing runs.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner.env.push((name.into(), value.into()));
        self
    }

    /// Sets the working directory (the grant's otherwise): a directory inside
    /// one of the plugin's granted directories, as the plugin sees it. Needs
    /// `guest_cwd = true` in the grant; otherwise `run` is denied.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.inner.cwd = Some(dir.into());
        self
    }

    /// Writes `bytes` to the program's standard input, which is then closed.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.inner.stdin = Some(bytes.into());
        self
    }

    /// Kills the program after `timeout` (capped by the grant's own timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner.timeout_ms = Some(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
        self
    }

    /// Runs the program to completion.
    pub fn run(&self) -> Result<ExecOutput, CapabilityError> {
        let out = wit::run(&self.inner)?;
        Ok(ExecOutput {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            timed_out: out.timed_out,
            truncated: out.truncated,
        })
    }
}

/// What a program did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code, `None` when the program was killed by a signal.
    pub exit_code: Option<i32>,
    /// Its standard output, up to the grant's output cap.
    pub stdout: Vec<u8>,
    /// Its standard error, up to the grant's output cap.
    pub stderr: Vec<u8>,
    /// The program was killed because it ran past its timeout.
    pub timed_out: bool,
    /// Output past the cap was discarded.
    pub truncated: bool,
}

impl ExecOutput {
    /// Whether the program exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }
}

/// A program the operator allows this plugin to run (its exec grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedProgram {
    /// The absolute path of the program.
    pub program: String,
    /// When set, exactly this many arguments, the i-th fully matching the i-th
    /// regular expression; `None`: any arguments.
    pub args: Option<Vec<String>>,
    /// The longest one run may take, in milliseconds.
    pub timeout_ms: u64,
}

impl AllowedProgram {
    /// The program's file name (`df` for `/usr/bin/df`).
    pub fn name(&self) -> &str {
        self.program.rsplit('/').next().unwrap_or(&self.program)
    }
}

/// The programs this plugin may run, from the operator's grant as it is now
/// (empty without one): for telling the model what it may ask for.
pub fn allowed() -> Vec<AllowedProgram> {
    wit::allowed()
        .into_iter()
        .map(|a| AllowedProgram {
            program: a.program,
            args: a.args,
            timeout_ms: a.timeout_ms,
        })
        .collect()
}
