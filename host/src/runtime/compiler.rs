//! Where plugin code is compiled: in this process, or in a child process
//! (`stockade internal-compile`) that the serving host starts for each
//! component it has no cached code for.
//!
//! Compiling in a child keeps Cranelift out of the host: its code pages
//! (tens of MB of the binary's text, resident once used) and the heap it
//! frees but glibc keeps, which would otherwise stay in a long-running host
//! after its first start (75–82 MB idle with 10 plugins compiled in-process,
//! 37 MB with their code from the cache). It also contains a component that
//! makes the compiler crash or run away: the child dies or is killed after
//! [`COMPILE_TIMEOUT`], and the plugin is refused with that reason; the host
//! carries on.
//!
//! The child reads the component's bytes on stdin and writes the compiled
//! artifact ([`Engine::precompile_component`]) on stdout, both over pipes only
//! the two processes hold; on a compile error it writes the error on stderr
//! and exits with [`EXIT_INVALID`]. The executable is the host's own image
//! (`/proc/<pid>/exe` on Linux, so an upgrade of the file on disk while the
//! host runs does not change the compiler), with the same engine settings
//! ([`super::RuntimeOptions`] passed as arguments); wasmtime checks both
//! again when the artifact is loaded.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::RuntimeOptions;

/// The hidden subcommand the child runs.
pub const CHILD_COMMAND: &str = "internal-compile";

/// The longest a child may take to compile one component (a large component,
/// e.g. a Python interpreter, takes tens of seconds on a small machine).
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(300);

/// The child's exit code when the component does not compile (its error on
/// stderr).
const EXIT_INVALID: i32 = 3;

/// Where compiling happens.
#[derive(Debug, Clone, Default)]
pub enum Compiler {
    /// In this process (tests, one-shot commands).
    #[default]
    InProcess,
    /// In a child process running this executable with [`CHILD_COMMAND`].
    Child {
        /// The executable.
        exe: PathBuf,
        /// The engine settings the child must use (the host's own).
        options: RuntimeOptions,
        /// How long it may take ([`COMPILE_TIMEOUT`]).
        timeout: Duration,
    },
}

/// Why a component could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The component is not valid or not supported (the compiler's message).
    #[error("{0}")]
    Invalid(String),
    /// The compiler process failed or was stopped; nothing is known about the
    /// component.
    #[error("the compiler process {0}")]
    Process(String),
}

impl Compiler {
    /// The child-process compiler running this process's own executable, or
    /// the in-process one (with a warning) when the executable cannot be
    /// found (no `/proc`, and `current_exe` fails).
    pub fn child(options: RuntimeOptions) -> Compiler {
        // `/proc/<pid>/exe` is this process's image, reachable even if the file
        // on disk is replaced or deleted (an upgrade while the host runs).
        let own_image = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
        let exe = if own_image.exists() {
            own_image
        } else {
            match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => {
                    tracing::warn!(
                        "cannot find this program's executable ({e}); plugins are compiled in-process"
                    );
                    return Compiler::InProcess;
                }
            }
        };
        Compiler::Child {
            exe,
            options,
            timeout: COMPILE_TIMEOUT,
        }
    }

    /// Where it compiles, for logs: `child` or `in-process`.
    pub fn kind(&self) -> &'static str {
        match self {
            Compiler::InProcess => "in-process",
            Compiler::Child { .. } => "child",
        }
    }

    /// Compiles component `wasm` for `engine`: the loaded component and its
    /// artifact (for the cache). Runs Cranelift (in this thread or a child
    /// process): call from a blocking context.
    pub fn component(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> Result<(Component, Vec<u8>), CompileError> {
        let artifact = self.precompile(engine, wasm)?;
        let component = load_fresh(engine, &artifact).map_err(|e| {
            CompileError::Process(format!(
                "produced code this engine refuses: {}",
                super::first_line(&e)
            ))
        })?;
        Ok((component, artifact))
    }

    fn precompile(&self, engine: &Engine, wasm: &[u8]) -> Result<Vec<u8>, CompileError> {
        match self {
            Compiler::InProcess => engine
                .precompile_component(wasm)
                .map_err(|e| CompileError::Invalid(super::first_line(&e))),
            Compiler::Child {
                exe,
                options,
                timeout,
            } => in_child(exe, *options, *timeout, wasm),
        }
    }
}

/// Loads an artifact [`Compiler::precompile`] has just produced.
#[allow(unsafe_code)]
fn load_fresh(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be compiled code that
    // wasmtime produced for a compatible engine. `artifact` was produced a
    // moment ago by `Engine::precompile_component`, either in this process or
    // in a child running this very executable image (`/proc/<our pid>/exe`)
    // with this engine's settings, read back over a pipe that only the child
    // and this process hold: the same code this process would have compiled
    // itself. wasmtime additionally checks the version and engine settings
    // recorded in the artifact and refuses a mismatch with an error.
    unsafe { Component::deserialize(engine, artifact) }
}

/// The arguments that give the child `options`.
fn option_args(options: RuntimeOptions) -> [String; 2] {
    [
        format!("--fuel={}", options.fuel),
        format!("--epoch={}", options.epoch),
    ]
}

fn in_child(
    exe: &PathBuf,
    options: RuntimeOptions,
    timeout: Duration,
    wasm: &[u8],
) -> Result<Vec<u8>, CompileError> {
    let process = |what: String| CompileError::Process(what);
    let mut child = std::process::Command::new(exe)
        .arg(CHILD_COMMAND)
        .args(option_args(options))
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| process(format!("could not start ({}): {e}", exe.display())))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let child = std::sync::Arc::new(std::sync::Mutex::new(child));
    let (done, finished) = std::sync::mpsc::channel::<()>();
    // The watchdog kills the child if it is still compiling at the deadline
    // (its pipes then close, which ends the reads below).
    let watchdog = {
        let child = child.clone();
        std::thread::spawn(move || {
            let timed_out = matches!(
                finished.recv_timeout(timeout),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            if timed_out && let Ok(mut child) = child.lock() {
                let _ = child.kill();
            }
            timed_out
        })
    };
    let input = wasm.to_vec();
    let writer = std::thread::spawn(move || {
        // A child that dies early closes its end: its exit status says why.
        let _ = stdin.write_all(&input);
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = (&mut stderr).take(64 << 10).read_to_string(&mut text);
        text
    });
    let mut artifact = Vec::new();
    let read = stdout.read_to_end(&mut artifact);
    let _ = writer.join();
    let message = errors.join().unwrap_or_default();
    drop(done);
    let killed = watchdog.join().unwrap_or(false);
    let status = child
        .lock()
        .map_err(|_| process("could not be waited for".into()))?
        .wait()
        .map_err(|e| process(format!("could not be waited for: {e}")))?;
    let message = message.trim();
    if killed {
        return Err(process(format!(
            "was stopped after {} ms (the component takes too long to compile)",
            timeout.as_millis()
        )));
    }
    match status.code() {
        Some(0) => {
            read.map_err(|e| process(format!("output could not be read: {e}")))?;
            Ok(artifact)
        }
        Some(EXIT_INVALID) => Err(CompileError::Invalid(
            message
                .lines()
                .next()
                .unwrap_or("invalid component")
                .to_owned(),
        )),
        _ => Err(process(format!(
            "failed ({status}){}",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {}", message.chars().take(300).collect::<String>())
            }
        ))),
    }
}

/// The child's side (`stockade internal-compile --fuel=B --epoch=B`): compiles
/// the component on stdin and writes the artifact on stdout. Returns the exit
/// code.
pub fn child_main(options: RuntimeOptions) -> i32 {
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut wasm) {
        eprintln!("cannot read the component from stdin: {e}");
        return 1;
    }
    let engine = match Engine::new(&super::engine_config(options)) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("cannot build the engine: {e:#}");
            return 1;
        }
    };
    match engine.precompile_component(&wasm) {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cannot write the compiled code: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("{}", super::first_line(&e));
            EXIT_INVALID
        }
    }
}

#[cfg(test)]
#[path = "compiler_tests.rs"]
mod tests;
