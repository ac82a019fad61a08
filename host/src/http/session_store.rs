//! rmcp's [`SessionStore`] over the shared store: the `initialize` handshake of
//! every session, so a host that never saw a session (another host opened it,
//! or that host died) can carry it on without the client initializing again.
//! Who may use the session is checked before rmcp sees the request, by the
//! bearer gate (`auth::shared::Sessions`).

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};

use crate::auth::store::SharedState;

/// The handshakes of MCP sessions, in the shared store.
pub struct SharedSessions(pub Arc<dyn SharedState>);

#[async_trait::async_trait]
impl SessionStore for SharedSessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        match self.0.load_session_state(session_id).await? {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let json = serde_json::to_string(state)?;
        self.0
            .save_session_state(session_id, &json, crate::auth::now_secs())
            .await?;
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        // A session that ends on this host (idle expiry, shutdown) may still be
        // carried on elsewhere: only a client's DELETE forgets it everywhere
        // (the gate does that); the purge removes abandoned ones after a day.
        let _ = session_id;
        Ok(())
    }
}
