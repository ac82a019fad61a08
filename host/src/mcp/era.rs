//! Which revision of MCP a request speaks, and what that changes in its answer.
//!
//! One endpoint serves two eras (ARCHITECTURE.md, "Two eras of MCP"):
//! - **legacy** (2025-11-25 and older): an `initialize` session; the log level
//!   is the session's (`logging/setLevel`), results keep their old shape;
//! - **modern** (2026-07-28): every request stands alone and says in its
//!   `_meta` who it is and what it can do; nothing is inferred from earlier
//!   requests. Results carry `serverInfo` in their `_meta` and caching hints;
//!   log notifications are sent only when the request asks for them with
//!   `io.modelcontextprotocol/logLevel`.

use rmcp::model::{Implementation, ProtocolVersion};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};

use super::link::level_index;

/// A log level above every real one: no `notifications/message` at all.
pub(crate) const LOG_OFF: u8 = 8;

/// The `_meta` key of a modern request's log level.
const LOG_LEVEL_KEY: &str = "io.modelcontextprotocol/logLevel";

/// The `_meta` key under which modern results name the server.
const SERVER_INFO_KEY: &str = "io.modelcontextprotocol/serverInfo";

/// The eight level names of MCP logging, lowest first.
const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// How long a list is fresh for any caller when it is the same for every
/// caller (no plugin in it needs a scope). A reload also tells listening
/// clients at once.
pub(crate) const PUBLIC_LIST_TTL_MS: u64 = 60_000;

/// How long `server/discover` is fresh: it changes only with the binary.
pub(crate) const DISCOVER_TTL_MS: u64 = 3_600_000;

/// The revision of one request, as far as answering it is concerned.
#[derive(Clone, Debug)]
pub(crate) struct Era {
    /// The request's revision: its own `_meta` (modern) or its session's.
    pub version: Option<ProtocolVersion>,
    /// 2026-07-28 or later: stateless, answered in the modern shape.
    pub modern: bool,
    /// The client's own description of itself (for the audit log only: it is
    /// self-reported and never used for a decision).
    pub client: Option<Implementation>,
}

impl Era {
    /// The era of the request `cx` (rmcp's own test: a modern request is one
    /// whose revision, from its `_meta` or its session, is 2026-07-28 or later).
    pub(crate) fn of(cx: &RequestContext<RoleServer>) -> Era {
        let version = cx.protocol_version();
        let modern = version
            .as_ref()
            .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        Era {
            version,
            modern,
            client: cx.client_info(),
        }
    }

    /// The revision as the audit log records it (`"2025-11-25"`), or
    /// `"unknown"` for a session that never said.
    pub(crate) fn revision(&self) -> String {
        self.version
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |v| v.as_str().to_owned())
    }

    /// The client as the audit log records it: `name/version`, each cut to 64
    /// characters.
    pub(crate) fn client_label(&self) -> Option<String> {
        self.client.as_ref().map(|c| {
            let cut = |s: &str| s.chars().take(64).collect::<String>();
            format!("{}/{}", cut(&c.name), cut(&c.version))
        })
    }

    /// Adds what a modern result carries (`serverInfo`, and caching hints for
    /// a cacheable one); a legacy result is left as it was.
    pub(crate) fn stamp(&self, result: &mut Value, cache: Option<Cache>) {
        if !self.modern {
            return;
        }
        let Some(obj) = result.as_object_mut() else {
            return;
        };
        let meta = obj.entry("_meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(
                SERVER_INFO_KEY.to_owned(),
                json!({ "name": "stockade", "version": env!("CARGO_PKG_VERSION") }),
            );
        }
        if let Some(cache) = cache {
            obj.insert("ttlMs".into(), cache.ttl_ms.into());
            obj.insert(
                "cacheScope".into(),
                if cache.public { "public" } else { "private" }.into(),
            );
        }
    }
}

/// The caching hints of a cacheable result (MCP 2026-07-28, "Caching").
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cache {
    /// How long the result is fresh, in milliseconds.
    pub ttl_ms: u64,
    /// Whether it may be served to another caller (`public`), or only to
    /// this one (`private`).
    pub public: bool,
}

impl Cache {
    /// A list's hints: public for a while when it is the same for every
    /// caller, else private and at once stale.
    pub(crate) fn list(same_for_everyone: bool) -> Cache {
        if same_for_everyone {
            Cache {
                ttl_ms: PUBLIC_LIST_TTL_MS,
                public: true,
            }
        } else {
            Cache::private()
        }
    }

    /// Private and at once stale: a resource's contents come from plugin code
    /// that may answer each caller differently.
    pub(crate) fn private() -> Cache {
        Cache {
            ttl_ms: 0,
            public: false,
        }
    }
}

/// The minimum log level of a modern request's notifications: its
/// `io.modelcontextprotocol/logLevel`, or [`LOG_OFF`] when it asks for none
/// (a server must not send unrequested log messages). A value that is not a
/// level is refused with `-32602`. Read from the raw `_meta`: rmcp's typed
/// accessor cannot tell a bad value from an absent one.
pub(crate) fn request_log_level(cx: &RequestContext<RoleServer>) -> Result<u8, ErrorData> {
    match cx.meta.0.get(LOG_LEVEL_KEY) {
        None => Ok(LOG_OFF),
        Some(Value::String(s)) if LEVELS.contains(&s.as_str()) => Ok(level_index(s)),
        Some(other) => {
            let shown: String = other.to_string().chars().take(64).collect();
            Err(ErrorData::invalid_params(
                format!(
                    "_meta `{LOG_LEVEL_KEY}` is {shown}, not a log level: use one of {}",
                    LEVELS.join(", ")
                ),
                Some(json!({ "field": LOG_LEVEL_KEY })),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn era(modern: bool) -> Era {
        Era {
            version: None,
            modern,
            client: None,
        }
    }

    #[test]
    fn only_modern_results_are_stamped() {
        let mut legacy = json!({ "tools": [] });
        era(false).stamp(&mut legacy, Some(Cache::list(true)));
        assert_eq!(legacy, json!({ "tools": [] }));

        let mut modern = json!({ "tools": [], "_meta": { "x": 1 } });
        era(true).stamp(&mut modern, Some(Cache::list(true)));
        assert_eq!(modern["_meta"]["x"], 1, "existing _meta is kept");
        assert_eq!(modern["_meta"][SERVER_INFO_KEY]["name"], "stockade");
        assert_eq!(modern["ttlMs"], PUBLIC_LIST_TTL_MS);
        assert_eq!(modern["cacheScope"], "public");

        let mut private = json!({ "tools": [] });
        era(true).stamp(&mut private, Some(Cache::list(false)));
        assert_eq!(
            (private["ttlMs"].clone(), private["cacheScope"].clone()),
            (json!(0), json!("private"))
        );

        let mut call = json!({ "content": [] });
        era(true).stamp(&mut call, None);
        assert!(
            call.get("ttlMs").is_none(),
            "a tool result is not cacheable"
        );
    }

    #[test]
    fn levels_match_the_link_order() {
        for (i, l) in LEVELS.iter().enumerate() {
            assert_eq!(level_index(l) as usize, i, "{l}");
        }
        assert!(LOG_OFF as usize >= LEVELS.len());
    }
}
