//! `stockade:plugin/progress`: progress notifications for the current call.

use crate::bindings::progress::Host;
use crate::call::CallContext;

impl Host for CallContext {
    async fn report(&mut self, progress: f64, total: Option<f64>, message: Option<String>) {
        let cx = self;
        if !progress.is_finite() || total.is_some_and(|t| !t.is_finite()) {
            return;
        }
        if !cx.spend_notify(&[message.as_deref()]) {
            return;
        }
        if let Some(link) = &cx.link {
            link.progress(progress, total, message);
        }
    }
}
