//! `stockade:plugin/client`: sampling and elicitation requests to the MCP client.
//!
//! Not granted to any plugin yet: every request is denied with the config key
//! that will grant it.

use crate::bindings::client::{
    ElicitationRequest, ElicitationResponse, Host, SamplingRequest, SamplingResponse,
};
use crate::bindings::types::CapabilityError;
use crate::runtime::CallState;

impl Host for CallState {
    async fn create_message(
        &mut self,
        _request: SamplingRequest,
    ) -> Result<SamplingResponse, CapabilityError> {
        Err(CapabilityError::Denied(
            self.cx.denied("client sampling", "grants.client = [\"sampling\"]"),
        ))
    }

    async fn elicit(
        &mut self,
        _request: ElicitationRequest,
    ) -> Result<ElicitationResponse, CapabilityError> {
        Err(CapabilityError::Denied(
            self.cx.denied("client elicitation", "grants.client = [\"elicitation\"]"),
        ))
    }
}
