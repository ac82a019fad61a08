//! Telling clients that something this plugin serves has changed.
//!
//! Always available. A resource's URI must be one of this plugin's resources or
//! match one of its templates; the sessions that subscribed to it
//! (`resources/subscribe`) get `notifications/resources/updated`, others hear
//! nothing. Needs a host of 0.1.1 or later.
//!
//! ```
//! # fn f() {
//! // After changing what `notes://today` reads:
//! stockade_sdk::events::resource_updated("notes://today");
//! # }
//! ```

use crate::bindings::stockade::plugin::events as wit;

/// Says that the resource at `uri` changed. False when the host ignored it: the
/// URI is not this plugin's, or the call already announced its share (64).
pub fn resource_updated(uri: &str) -> bool {
    wit::resource_updated(uri)
}
