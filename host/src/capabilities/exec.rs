//! `stockade:plugin/exec`: run an allow-listed host program.
//!
//! Not granted to any plugin yet: every request is denied with the config key
//! that will grant it.

use crate::bindings::exec::{Command, Host, Output};
use crate::bindings::types::CapabilityError;
use crate::runtime::CallState;

impl Host for CallState {
    async fn run(&mut self, command: Command) -> Result<Output, CapabilityError> {
        Err(CapabilityError::Denied(self.cx.denied(
            &format!("exec (to run `{}`)", command.program),
            "grants.exec.programs",
        )))
    }
}
