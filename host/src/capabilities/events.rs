//! `stockade:plugin/events`: a plugin says one of its resources changed; the
//! MCP side tells the sessions subscribed to it. No grant: a plugin can only
//! name its own resources (the link checks), and the message is bounded.

use crate::bindings::events::Host;
use crate::call::CallContext;

impl Host for CallContext {
    async fn resource_updated(&mut self, uri: String) -> bool {
        if uri.len() > stockade_sdk::uri_template::MAX_URI_LEN {
            return false;
        }
        match &self.link {
            Some(link) => link.resource_updated(uri),
            None => false,
        }
    }
}
