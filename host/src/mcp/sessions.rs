//! The connected MCP sessions, so a change of the plugin set can be announced to
//! every client (`notifications/tools/list_changed`, and the resources/prompts
//! equivalents).

use std::sync::Mutex;

use rmcp::{Peer, RoleServer};

/// Peers of initialized sessions. Closed sessions are dropped on the next
/// broadcast.
#[derive(Default)]
pub struct Sessions {
    peers: Mutex<Vec<Peer<RoleServer>>>,
}

impl Sessions {
    /// Remembers a session's peer.
    pub fn add(&self, peer: Peer<RoleServer>) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(peer);
    }

    /// How many sessions are known (some may have closed since).
    pub fn len(&self) -> usize {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// How many sessions are open now.
    pub fn open(&self) -> usize {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| !p.is_transport_closed())
            .count()
    }

    /// Whether no session is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells every session that the tool, resource and prompt lists changed.
    pub async fn announce_list_changed(&self) {
        let peers: Vec<Peer<RoleServer>> = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.retain(|p| !p.is_transport_closed());
            peers.clone()
        };
        let mut sent = 0;
        for peer in peers {
            if peer.notify_tool_list_changed().await.is_ok() {
                sent += 1;
            }
            let _ = peer.notify_resource_list_changed().await;
            let _ = peer.notify_prompt_list_changed().await;
        }
        tracing::info!(sessions = sent, "announced list_changed");
    }
}
