//! An OAuth 2.1 client written for the tests: drives the built-in authorization
//! server of a running host over plain HTTP (reqwest), the way a browser and an
//! MCP client would, and reads the host's audit log.
#![allow(dead_code)]

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The redirect URI the tests register (nothing listens there: the code is read
/// from the `Location` header).
pub const REDIRECT: &str = "http://127.0.0.1:45678/callback";

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub body: String,
}

impl Resp {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The `Location` header's query parameter `key`.
    pub fn location_param(&self, key: &str) -> Option<String> {
        let loc = self.header("location")?;
        let url = url::Url::parse(&loc).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// A PKCE pair (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier = format!("{}{}", B64.encode(rand_bytes()), B64.encode(rand_bytes()));
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn rand_bytes() -> [u8; 24] {
    let mut b = [0u8; 24];
    getrandom::getrandom(&mut b).unwrap();
    b
}

/// Form-encodes pairs.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Tokens from `/token`.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The access token (JWT).
    pub access: String,
    /// The refresh token.
    pub refresh: String,
    /// The whole response.
    pub body: Value,
}

/// The test's OAuth client for one host.
pub struct Oauth {
    /// Never follows redirects.
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Oauth {
    /// A client for the host at `base`.
    pub fn new(base: &str) -> Self {
        Self::with_builder(base, reqwest::Client::builder())
    }

    /// A client for the host at `base` whose connections come from `local`
    /// (another loopback address, e.g. `127.0.0.2`: a second client address).
    pub fn from_address(base: &str, local: &str) -> Self {
        let ip: std::net::IpAddr = local.parse().unwrap();
        Self::with_builder(base, reqwest::Client::builder().local_address(ip))
    }

    /// A client for `base` that opens a new connection for every request (so
    /// a load balancer in front of several hosts routes each one anew).
    pub fn unpooled(base: &str) -> Self {
        Self::with_builder(base, reqwest::Client::builder().pool_max_idle_per_host(0))
    }

    fn with_builder(base: &str, builder: reqwest::ClientBuilder) -> Self {
        let http = builder
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Oauth {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    async fn read(r: reqwest::Response) -> Resp {
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Resp {
        Self::read(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// POST a form to `path`.
    pub async fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> Resp {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pairs))
            .send()
            .await
            .unwrap();
        Self::read(r).await
    }

    /// POST JSON to `path`.
    pub async fn post_json(&self, path: &str, v: &Value) -> Resp {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(v)
            .send()
            .await
            .unwrap();
        Self::read(r).await
    }

    /// Registers a public client with `redirect_uris`; returns the response.
    pub async fn register_raw(&self, redirect_uris: &[&str]) -> Resp {
        self.post_json(
            "/register",
            &json!({
                "client_name": "Test <Client>",
                "redirect_uris": redirect_uris,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            }),
        )
        .await
    }

    /// Registers a public client with [`REDIRECT`]; returns its id.
    pub async fn register(&self) -> String {
        let r = self.register_raw(&[REDIRECT]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.json()["client_id"].as_str().unwrap().to_owned()
    }

    /// The authorization URL's query for `client_id`.
    pub fn authorize_query(
        &self,
        client_id: &str,
        challenge: &str,
        state: &str,
        extra: &[(&str, &str)],
    ) -> String {
        let resource = format!("{}/mcp", self.base);
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("state", state),
            ("resource", resource.as_str()),
        ];
        for (k, v) in extra {
            if let Some(p) = pairs.iter_mut().find(|(pk, _)| pk == k) {
                p.1 = v;
            } else {
                pairs.push((k, v));
            }
        }
        let pairs: Vec<(&str, &str)> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        form(&pairs)
    }

    /// GET `/authorize?query`.
    pub async fn authorize(&self, query: &str) -> Resp {
        self.get(&format!("/authorize?{query}")).await
    }

    /// Submits the login form of `page` with `password`.
    pub async fn submit_login(&self, page: &Resp, password: &str) -> Resp {
        let csrf = csrf_of(&page.body);
        self.post_form(
            "/authorize",
            &[
                ("csrf", &csrf),
                ("password", password),
                ("action", "approve"),
            ],
        )
        .await
    }

    /// Like [`Oauth::login`] for a user of the users file, asking for `scope`
    /// (empty: the default).
    pub async fn login_as(
        &self,
        client_id: &str,
        user: &str,
        password: &str,
        scope: &str,
    ) -> (String, String) {
        let (verifier, challenge) = pkce();
        let page = self
            .authorize(&self.authorize_query(client_id, &challenge, "st-1", &[("scope", scope)]))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let csrf = csrf_of(&page.body);
        let done = self
            .post_form(
                "/authorize",
                &[
                    ("csrf", &csrf),
                    ("username", user),
                    ("password", password),
                    ("action", "approve"),
                ],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        (
            done.location_param("code").expect("code in the redirect"),
            verifier,
        )
    }

    /// Register, log in as `user` asking for `scope`, exchange: (client_id, tokens).
    pub async fn full_login_as(&self, user: &str, password: &str, scope: &str) -> (String, Tokens) {
        let client_id = self.register().await;
        let (code, verifier) = self.login_as(&client_id, user, password, scope).await;
        let r = self.exchange(&client_id, &code, &verifier).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (client_id, tokens(&r))
    }

    /// Opens the login page for a fresh PKCE pair and logs in: (code, verifier).
    pub async fn login(&self, client_id: &str, password: &str) -> (String, String) {
        let (verifier, challenge) = pkce();
        let page = self
            .authorize(&self.authorize_query(client_id, &challenge, "st-1", &[]))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let done = self.submit_login(&page, password).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(done.location_param("state").as_deref(), Some("st-1"));
        assert_eq!(
            done.location_param("iss").as_deref(),
            Some(self.base.as_str())
        );
        (
            done.location_param("code").expect("code in the redirect"),
            verifier,
        )
    }

    /// Exchanges a code.
    pub async fn exchange(&self, client_id: &str, code: &str, verifier: &str) -> Resp {
        self.post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("code_verifier", verifier),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await
    }

    /// Uses a refresh token.
    pub async fn refresh(&self, client_id: &str, refresh: &str) -> Resp {
        self.post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", client_id),
            ],
        )
        .await
    }

    /// Register, log in, exchange: (client_id, tokens).
    pub async fn full_login(&self, password: &str) -> (String, Tokens) {
        let client_id = self.register().await;
        let (code, verifier) = self.login(&client_id, password).await;
        let r = self.exchange(&client_id, &code, &verifier).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (client_id, tokens(&r))
    }

    /// POST a JSON-RPC message to `/mcp` with an optional bearer token.
    pub async fn mcp(&self, token: Option<&str>, v: &Value) -> Resp {
        let mut rq = self
            .http
            .post(format!("{}/mcp", self.base))
            .header("accept", "application/json, text/event-stream")
            .json(v);
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        Self::read(rq.send().await.unwrap()).await
    }

    /// Sends `method` to `/mcp` with a bearer token, an `Mcp-Session-Id` and an
    /// optional JSON-RPC body.
    pub async fn in_session(
        &self,
        method: reqwest::Method,
        token: &str,
        session: &str,
        body: Option<&Value>,
    ) -> Resp {
        let mut rq = self
            .http
            .request(method, format!("{}/mcp", self.base))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", session)
            .bearer_auth(token);
        if let Some(v) = body {
            rq = rq.json(v);
        }
        Self::read(rq.send().await.unwrap()).await
    }
}

/// Writes a users file (`[[user]]` name, argon2 hash, scopes) into `dir`.
pub fn users_file(dir: &Path, users: &[(&str, &str, &[&str])]) -> std::path::PathBuf {
    let mut text = String::new();
    for (name, password, scopes) in users {
        let hash = stockade::auth::users::hash_password(password).unwrap();
        text.push_str(&format!(
            "[[user]]\nname = \"{name}\"\npassword_hash = '{hash}'\nscopes = {scopes:?}\n"
        ));
    }
    let path = dir.join("users.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A JSON-RPC `notifications/initialized`.
pub fn initialized() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

/// A JSON-RPC `tools/list`.
pub fn tools_list() -> Value {
    json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
}

/// The tokens of a `/token` response.
pub fn tokens(r: &Resp) -> Tokens {
    let body = r.json();
    Tokens {
        access: body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        refresh: body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
        body,
    }
}

/// The CSRF token in a login page.
pub fn csrf_of(html: &str) -> String {
    let i = html
        .find("name=csrf value=\"")
        .expect("csrf field in the page")
        + "name=csrf value=\"".len();
    html[i..].split('"').next().unwrap().to_owned()
}

/// A JSON-RPC `initialize` request.
pub fn initialize() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "oauth-test", "version": "0"},
        }
    })
}

/// A JSON-RPC `tools/call`.
pub fn tools_call(name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": name, "arguments": {"name": "Ada"}}})
}

/// Every line of the host's audit log, parsed.
pub fn audit(data_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir.join("audit/audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

/// The raw audit log text.
pub fn audit_text(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("audit/audit.log")).unwrap_or_default()
}

/// Whether the audit line `l` is an `event` whose fields contain every
/// `(key, substring)`.
fn audit_matches(l: &Value, event: &str, fields: &[(&str, &str)]) -> bool {
    l["event"] == event
        && fields.iter().all(|(k, sub)| match &l[*k] {
            Value::String(s) => s.contains(sub),
            Value::Null => false,
            other => other.to_string().contains(sub),
        })
}

/// The last line of `lines` matching (see [`audit_matches`]); panics naming
/// `what` and listing the lines when there is none.
fn find_audited(lines: &[Value], what: &str, event: &str, fields: &[(&str, &str)]) -> Value {
    lines
        .iter()
        .rev()
        .find(|l| audit_matches(l, event, fields))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no {what}audit line {event} with {fields:?}; the lines:\n{}",
                lines
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
}

/// Asserts an audit line with `event` whose fields contain every `(key, substring)`.
pub fn assert_audited(data_dir: &Path, event: &str, fields: &[(&str, &str)]) -> Value {
    find_audited(&audit(data_dir), "", event, fields)
}

/// How many audit lines the host has written so far: a mark for
/// [`audited_since`].
pub fn audit_mark(data_dir: &Path) -> usize {
    audit(data_dir).len()
}

/// The audit line with `event` and every `(key, substring)` among the lines
/// written after `mark`, so a check finds the line of its own request (every
/// refusal is audited before it is answered), never an earlier request's line
/// with the same reason; panics with those lines when there is none.
pub fn audited_since(data_dir: &Path, mark: usize, event: &str, fields: &[(&str, &str)]) -> Value {
    let lines = audit(data_dir);
    find_audited(&lines[mark.min(lines.len())..], "new ", event, fields)
}
