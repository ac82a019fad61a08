//! The connected MCP sessions, so a change of the plugin set can be announced to
//! every client (`notifications/tools/list_changed`, and the resources/prompts
//! equivalents), and a changed resource to the sessions subscribed to it
//! (`notifications/resources/updated`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use rmcp::model::ResourceUpdatedNotificationParam;
use rmcp::{Peer, RoleServer};

use crate::plugins::Snapshot;

/// The resource URIs one session subscribed to (shared with its handler).
pub type Subscriptions = Arc<Mutex<SubscriptionSet>>;

/// Subscriptions one session may hold.
pub const MAX_SESSION_SUBSCRIPTIONS: usize = 1024;
/// Bytes of subscribed URIs one session may hold.
pub const MAX_SESSION_SUBSCRIPTION_BYTES: usize = 256 << 10;
/// Subscriptions one subject may hold across all its sessions on this host.
pub const MAX_SUBJECT_SUBSCRIPTIONS: usize = 4096;
/// Bytes of subscribed URIs one subject may hold across its sessions here.
pub const MAX_SUBJECT_SUBSCRIPTION_BYTES: usize = 1 << 20;

/// A session's subscribed URIs, their size, and whose they are.
#[derive(Debug, Default)]
pub struct SubscriptionSet {
    uris: BTreeSet<String>,
    bytes: usize,
    /// The subject that subscribed (`""` without authentication).
    owner: Option<String>,
}

impl SubscriptionSet {
    /// Whether `uri` is subscribed.
    pub fn contains(&self, uri: &str) -> bool {
        self.uris.contains(uri)
    }

    /// How many URIs, and their bytes.
    pub fn load(&self) -> (usize, usize) {
        (self.uris.len(), self.bytes)
    }

    /// Subscribes `uri` for `owner`.
    pub fn insert(&mut self, uri: &str, owner: &str) {
        self.owner.get_or_insert_with(|| owner.to_owned());
        if self.uris.insert(uri.to_owned()) {
            self.bytes += uri.len();
        }
    }

    /// Unsubscribes `uri`.
    pub fn remove(&mut self, uri: &str) {
        if self.uris.remove(uri) {
            self.bytes -= uri.len();
        }
    }
}

struct Session {
    peer: Peer<RoleServer>,
    subscriptions: Subscriptions,
}

/// What changed, as `subscriptions/listen` streams hear it.
#[derive(Clone)]
pub enum Change {
    /// The tool, prompt and resource lists changed (a reload here or on
    /// another host of the store).
    Lists,
    /// A plugin said this resource changed.
    Resource(String),
    /// A reload replaced the plugins: a resource whose serving plugin version
    /// changed (or went away) changed.
    Reloaded {
        /// What was served before.
        old: Arc<Snapshot>,
        /// What is served now.
        new: Arc<Snapshot>,
    },
}

/// Changes a listen stream may fall behind by before it is told to re-list.
const CHANGE_BACKLOG: usize = 256;

/// Initialized sessions (closed ones are dropped on the next broadcast), and
/// the changes broadcast to `subscriptions/listen` streams.
pub struct Sessions {
    sessions: Mutex<Vec<Session>>,
    changes: tokio::sync::broadcast::Sender<Change>,
    /// With a shared store: where a plugin's resource update is published
    /// for the other hosts' clients, and this host's id.
    relay: std::sync::OnceLock<(Arc<dyn crate::auth::store::SharedState>, String)>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            sessions: Mutex::default(),
            changes: tokio::sync::broadcast::channel(CHANGE_BACKLOG).0,
            relay: std::sync::OnceLock::new(),
        }
    }
}

/// What a resource update published to the other hosts starts with.
pub const RESOURCE_EVENT: &str = "res ";

/// The longest URI published to the other hosts (a `NOTIFY` payload holds
/// under 8000 bytes): a longer one is announced on this host only.
pub const MAX_RELAYED_URI: usize = 4096;

impl Sessions {
    /// Remembers a session's peer and its subscriptions.
    pub fn add(&self, peer: Peer<RoleServer>, subscriptions: Subscriptions) {
        let mut sessions = self.lock();
        // Closed sessions go here too, not only at the next broadcast.
        sessions.retain(|s| !s.peer.is_transport_closed());
        sessions.push(Session {
            peer,
            subscriptions,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open sessions' peers (closed ones are forgotten), with what each
    /// subscribed to.
    fn open_sessions(&self) -> Vec<(Peer<RoleServer>, Subscriptions)> {
        let mut sessions = self.lock();
        sessions.retain(|s| !s.peer.is_transport_closed());
        sessions
            .iter()
            .map(|s| (s.peer.clone(), s.subscriptions.clone()))
            .collect()
    }

    /// How many sessions are known (some may have closed since).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// How many sessions are open now.
    pub fn open(&self) -> usize {
        self.lock()
            .iter()
            .filter(|s| !s.peer.is_transport_closed())
            .count()
    }

    /// Whether no session is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The subscriptions `subject` holds across its open sessions here: (count,
    /// bytes).
    pub fn subject_load(&self, subject: &str) -> (usize, usize) {
        self.open_sessions()
            .iter()
            .filter_map(|(_, subs)| {
                let subs = subs.lock().unwrap_or_else(|e| e.into_inner());
                (subs.owner.as_deref() == Some(subject)).then(|| subs.load())
            })
            .fold((0, 0), |(n, b), (n2, b2)| (n + n2, b + b2))
    }

    /// Publishes this host's plugins' resource updates to the other hosts of
    /// `store` (set once, when a shared store is open).
    pub fn relay_to(&self, store: Arc<dyn crate::auth::store::SharedState>, host: String) {
        let _ = self.relay.set((store, host));
    }

    /// A plugin of this host says `uri` changed: this host's sessions and
    /// listen streams hear it, and so do the other hosts' (through the store).
    pub async fn resource_changed(&self, uri: &str) {
        self.announce_resource_updated(uri).await;
        if let Some((store, host)) = self.relay.get() {
            if uri.len() > MAX_RELAYED_URI {
                tracing::debug!(
                    len = uri.len(),
                    "resource update too long to relay to other hosts"
                );
                return;
            }
            if let Err(e) = store.publish(host, &format!("{RESOURCE_EVENT}{uri}")).await {
                tracing::warn!("other hosts were not told of a resource update: {e}");
            }
        }
    }

    /// The changes from now on, for a listen stream.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Tells every session and listen stream that the tool, resource and
    /// prompt lists changed.
    pub async fn announce_list_changed(&self) {
        let _ = self.changes.send(Change::Lists);
        let mut sent = 0;
        for (peer, _) in self.open_sessions() {
            if peer.notify_tool_list_changed().await.is_ok() {
                sent += 1;
            }
            let _ = peer.notify_resource_list_changed().await;
            let _ = peer.notify_prompt_list_changed().await;
        }
        tracing::info!(sessions = sent, "announced list_changed");
    }

    /// Tells the sessions and listen streams subscribed to `uri` that it
    /// changed.
    pub async fn announce_resource_updated(&self, uri: &str) {
        let _ = self.changes.send(Change::Resource(uri.to_owned()));
        for (peer, subs) in self.open_sessions() {
            let subscribed = subs.lock().unwrap_or_else(|e| e.into_inner()).contains(uri);
            if subscribed {
                let _ = peer
                    .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                    .await;
            }
        }
    }

    /// After a reload from `old` to `new`: tells each session about every URI it
    /// subscribed to whose serving plugin version changed (or went away).
    pub async fn announce_reloaded_resources(&self, old: &Arc<Snapshot>, new: &Arc<Snapshot>) {
        let _ = self.changes.send(Change::Reloaded {
            old: old.clone(),
            new: new.clone(),
        });
        for (peer, subs) in self.open_sessions() {
            let uris: Vec<String> = subs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .uris
                .iter()
                .cloned()
                .collect();
            for uri in uris {
                let before = old.resource_owner(&uri).map(|p| p.digest.clone());
                let after = new.resource_owner(&uri).map(|p| p.digest.clone());
                if before != after {
                    let _ = peer
                        .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                        .await;
                }
            }
        }
    }
}
