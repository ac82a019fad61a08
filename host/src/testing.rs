//! The one way a test may decline to run: [`unavailable`].
//!
//! A test that returns early because something it needs is missing passes
//! without testing anything, so by default declining *fails* the test. A
//! developer on a machine that lacks something (no PostgreSQL binaries, say)
//! may set `STOCKADE_TEST_ALLOW_SKIP=1` to let such tests pass with a note;
//! `scripts/test` then lists them at the end. CI never sets it.

use std::io::Write;

/// The environment variable that lets tests decline to run.
pub const ALLOW_SKIP: &str = "STOCKADE_TEST_ALLOW_SKIP";

/// Called by a test that cannot run here, with what is missing and how to
/// get it. Panics (the test fails) unless [`ALLOW_SKIP`] is `1`; then records
/// the skip in `$STOCKADE_TEST_SKIP_LOG` (when set) and returns, and the test
/// must return at once.
pub fn unavailable(test: &str, why: &str) {
    if std::env::var(ALLOW_SKIP).as_deref() != Ok("1") {
        panic!("{test} cannot run here: {why} (set {ALLOW_SKIP}=1 to allow skipping it)");
    }
    eprintln!("SKIPPED {test}: {why}");
    if let Some(log) = std::env::var_os("STOCKADE_TEST_SKIP_LOG") {
        let line = format!("{test}: {why}\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn declining_fails_unless_allowed() {
        let r = std::panic::catch_unwind(|| super::unavailable("t", "no widget"));
        if std::env::var(super::ALLOW_SKIP).as_deref() == Ok("1") {
            assert!(r.is_ok(), "allowed: the test is let go");
            return;
        }
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("t cannot run here: no widget"), "{msg}");
        assert!(msg.contains("STOCKADE_TEST_ALLOW_SKIP=1"), "{msg}");
    }
}
