//! `subscriptions/listen` (MCP 2026-07-28): a client's long-lived stream of
//! list changes and resource updates.
//!
//! rmcp acknowledges the request with the filter this server honours (what
//! the client asked for, cut to what [`get_info`](super::StockadeMcp) advertises and to
//! what [`accepted`] keeps) and tags every notification with the
//! subscription's id. A stream hears:
//! - `tools`, `prompts` and `resources` `list_changed` after every reload of
//!   the plugin directory or the configuration, on this host or on another
//!   host of a shared store (the reload relay);
//! - `resources/updated` for a subscribed URI its caller may read, when the
//!   plugin serving it says so (on this host or another of the store) or a
//!   reload replaces that plugin.
//!
//! Bounds: [`MAX_STREAMS_PER_SUBJECT`] open streams per subject on a host, and
//! the URI limits of legacy subscriptions for each stream. A stream ends (with
//! its final result) when the client closes it or the host shuts down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::ErrorData;
use rmcp::model::SubscriptionFilter;
use rmcp::service::SubscriptionContext;
use tokio::sync::broadcast::error::RecvError;

use super::sessions::{Change, MAX_SESSION_SUBSCRIPTION_BYTES, MAX_SESSION_SUBSCRIPTIONS};
use super::{StockadeMcp, permitted, principal};

/// Open listen streams one subject may hold on one host.
pub const MAX_STREAMS_PER_SUBJECT: usize = 16;

/// The open listen streams, by subject.
#[derive(Default)]
pub struct Listeners(Arc<Mutex<HashMap<String, usize>>>);

/// One open stream's place; given back when dropped.
struct Slot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    subject: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.subject);
            }
        }
    }
}

impl Listeners {
    /// A place for one more stream of `subject`, unless it holds the most.
    fn enter(&self, subject: &str) -> Option<Slot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(subject.to_owned()).or_insert(0);
        if *n >= MAX_STREAMS_PER_SUBJECT {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.0.clone(),
            subject: subject.to_owned(),
        })
    }

    /// How many streams are open.
    pub fn open(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

/// The part of a requested filter this server honours: the three list
/// changes, and the subscribed URIs up to the limits of a session's
/// subscriptions (in number and bytes), each no longer than a URI may be.
pub fn accepted(requested: &SubscriptionFilter) -> SubscriptionFilter {
    let mut accepted = requested.clone();
    if let Some(uris) = &requested.resource_subscriptions {
        let mut bytes = 0;
        let kept: Vec<String> = uris
            .iter()
            .filter(|u| u.len() <= stockade_sdk::uri_template::MAX_URI_LEN)
            .take(MAX_SESSION_SUBSCRIPTIONS)
            .take_while(|u| {
                bytes += u.len();
                bytes <= MAX_SESSION_SUBSCRIPTION_BYTES
            })
            .cloned()
            .collect();
        accepted.resource_subscriptions = Some(kept);
    }
    accepted
}

impl StockadeMcp {
    /// Serves one listen stream until the client closes it or the host
    /// drains.
    pub(super) async fn listen_stream(&self, cx: SubscriptionContext) -> Result<(), ErrorData> {
        let who = principal(cx.request_context());
        let subject = who.as_ref().map_or("", |p| p.subject.as_str()).to_owned();
        let Some(_slot) = self.shared.listeners.enter(&subject) else {
            return Err(ErrorData::invalid_request(
                format!(
                    "you already have {MAX_STREAMS_PER_SUBJECT} subscriptions/listen streams open \
                     on this host; close one first"
                ),
                None,
            ));
        };
        let mut changes = self.shared.sessions.changes();
        let sink = cx.sink().clone();
        let accepted = cx.accepted().clone();
        let wants = |flag: Option<bool>| flag == Some(true);
        tracing::debug!(subject = %subject, "listen stream opened");
        loop {
            let change = tokio::select! {
                () = cx.cancelled() => return Ok(()),
                () = self.shared.draining.cancelled() => return Ok(()),
                c = changes.recv() => c,
            };
            let sent = match change {
                // A stream that fell behind may have missed a list change.
                Ok(Change::Lists) | Err(RecvError::Lagged(_)) => {
                    let mut r = Ok(());
                    if wants(accepted.tools_list_changed) {
                        r = r.and(sink.notify_tool_list_changed().await);
                    }
                    if wants(accepted.prompts_list_changed) {
                        r = r.and(sink.notify_prompt_list_changed().await);
                    }
                    if wants(accepted.resources_list_changed) {
                        r = r.and(sink.notify_resource_list_changed().await);
                    }
                    r
                }
                Ok(Change::Resource(uri)) => {
                    let subscribed = accepted
                        .resource_subscriptions
                        .as_ref()
                        .is_some_and(|u| u.contains(&uri));
                    // Only for a caller who may read it now.
                    let readable = subscribed
                        && self
                            .shared
                            .catalog
                            .snapshot()
                            .resource_owner_by(&uri, |p| permitted(who.as_ref(), p))
                            .is_some();
                    if readable {
                        sink.notify_resource_updated(uri).await
                    } else {
                        Ok(())
                    }
                }
                Ok(Change::Reloaded { old, new }) => {
                    let mut r = Ok(());
                    for uri in accepted.resource_subscriptions.iter().flatten() {
                        let before = old
                            .resource_owner_by(uri, |p| permitted(who.as_ref(), p))
                            .map(|p| p.digest.clone());
                        let after = new
                            .resource_owner_by(uri, |p| permitted(who.as_ref(), p))
                            .map(|p| p.digest.clone());
                        if before != after && (before.is_some() || after.is_some()) {
                            r = r.and(sink.notify_resource_updated(uri.clone()).await);
                        }
                    }
                    r
                }
                Err(RecvError::Closed) => return Ok(()),
            };
            if sent.is_err() {
                // The stream is gone (closed by the client or the transport).
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_per_subject() {
        let l = Listeners::default();
        let slots: Vec<Slot> = (0..MAX_STREAMS_PER_SUBJECT)
            .map(|_| l.enter("alice").unwrap())
            .collect();
        assert!(l.enter("alice").is_none());
        let bob = l.enter("bob");
        assert!(bob.is_some(), "another subject has its own");
        assert_eq!(l.open(), MAX_STREAMS_PER_SUBJECT + 1);
        drop(slots);
        let again = l.enter("alice");
        assert!(again.is_some());
        assert_eq!(l.open(), 2);
    }

    #[test]
    fn long_and_too_many_uris_are_left_out() {
        let long = "x".repeat(stockade_sdk::uri_template::MAX_URI_LEN + 1);
        let mut uris = vec!["a://1".to_owned(), long];
        uris.extend((0..MAX_SESSION_SUBSCRIPTIONS + 5).map(|i| format!("a://n{i}")));
        let mut requested = SubscriptionFilter::new();
        requested.tools_list_changed = Some(true);
        requested.resource_subscriptions = Some(uris);
        let a = accepted(&requested);
        assert_eq!(a.tools_list_changed, Some(true));
        let kept = a.resource_subscriptions.unwrap();
        assert_eq!(kept.len(), MAX_SESSION_SUBSCRIPTIONS);
        assert_eq!(kept[0], "a://1");
        assert!(
            kept.iter()
                .all(|u| u.len() <= stockade_sdk::uri_template::MAX_URI_LEN)
        );
    }
}
