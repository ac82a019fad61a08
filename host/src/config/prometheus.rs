//! The `[prometheus]` table: where `GET /metrics` is served.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of the `[prometheus]` table. Neither key set: no `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrometheusSettings {
    /// Serve `/metrics` on this separate address: on loopback without
    /// authentication (to requests naming that address); on any other
    /// address only with the token of `token_file`.
    pub listen: Option<SocketAddr>,
    /// Serve `/metrics` on the main listener too, to requests carrying
    /// `Authorization: Bearer <the first line of this file>` (absolute path;
    /// at least 16 characters).
    pub token_file: Option<PathBuf>,
}

impl PrometheusSettings {
    /// Adds what is wrong with `[prometheus]` to `problems`.
    pub(crate) fn check(&self, main_listen: SocketAddr, problems: &mut Vec<String>) {
        if let Some(p) = &self.token_file
            && !p.is_absolute()
        {
            problems.push(format!(
                "prometheus.token_file: `{}` must be an absolute path",
                p.display()
            ));
        }
        if let Some(addr) = self.listen
            && !addr.ip().is_loopback()
            && self.token_file.is_none()
        {
            problems.push(format!(
                "prometheus.listen: {addr} is reachable from other machines, and /metrics there \
                 would answer anyone: set `token_file` (scrapers then send the token) or listen \
                 on 127.0.0.1"
            ));
        }
        if self.listen == Some(main_listen) && main_listen.port() != 0 {
            problems.push(format!(
                "prometheus.listen: {main_listen} is the main listener's address; pick another port, \
                 or use `token_file` to serve /metrics there"
            ));
        }
    }

    /// The scrape token from `token_file`, if set: `Err` when it cannot be read
    /// or is too short (so the host does not start with a guessable token).
    pub fn token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("prometheus.token_file: cannot read {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or_default().trim().to_owned();
        if token.chars().count() < 16 {
            return Err(format!(
                "prometheus.token_file: the token in {} is shorter than 16 characters",
                path.display()
            ));
        }
        Ok(Some(token))
    }
}
