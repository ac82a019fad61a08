//! Multi round-trip requests (MCP 2026-07-28, "MRTR") for plugin calls.
//!
//! A 2026-07-28 request stands alone, so the server cannot send the client a
//! request of its own while a call runs. When a plugin asks its client
//! something (`client.create-message`, `client.elicit`) under such a request,
//! the call ends with `resultType: "input_required"`: the question under a
//! key, and a `requestState`. The client answers and sends the same request
//! again with `inputResponses` and the state; the plugin then **runs again
//! from the start**, and each question it asks is answered from what the
//! client has answered so far, until it finishes or asks something new.
//!
//! - Keys are the host's: `sampling-1`, `elicitation-2`, … (the kind and the
//!   call's count of that kind), stable while the plugin asks the same things
//!   in the same order. An answer is kept with the sha256 of the question it
//!   answers and used only for that question: a plugin that asks something
//!   else under a key is asked again, never given another question's answer.
//! - The state is sealed (ChaCha20-Poly1305): the client can neither read the
//!   answers in it nor change them, and it opens only for the same caller
//!   (subject and OAuth client), method, target and arguments; with a shared
//!   store every host holds the key (derived from `store.secret_file`), so the
//!   retry may reach any host. One that fails to open is refused (-32602).
//! - Bounds: [`MAX_ROUNDS`] rounds, [`MAX_STATE_BYTES`] of state, and
//!   [`STATE_TTL_SECS`] from the first round.
//!
//! What a plugin author must know: under a 2026 client a call that asks is run
//! again for each answer, so ask before doing anything with effects (or make
//! the effects safe to repeat), and ask the same questions in the same order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// At most this many rounds of questions in one call.
pub const MAX_ROUNDS: u32 = 8;
/// The sealed state (all answers so far) is at most this large.
pub const MAX_STATE_BYTES: usize = 64 << 10;
/// A call's rounds must end this long after its first.
pub const STATE_TTL_SECS: i64 = 600;

/// What a sealed state starts with.
const PREFIX: &str = "s1.";

/// The key that seals request states.
pub struct StateKey(LessSafeKey);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

impl StateKey {
    /// A key from 32 secret bytes.
    pub fn new(bytes: &[u8; 32]) -> StateKey {
        StateKey(LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte ChaCha20 key"),
        ))
    }

    /// This host's own key, in `<data>/keys/request-state.key` (made once,
    /// readable by the owner only), for a host with no shared store.
    pub fn local(data_dir: &Path) -> std::io::Result<StateKey> {
        let path = data_dir.join("keys/request-state.key");
        let bytes = match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => b,
            Ok(b) => {
                return Err(std::io::Error::other(format!(
                    "{} holds {} bytes, not a 32-byte key: delete it to make a new one",
                    path.display(),
                    b.len()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = vec![0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map_err(
                    |_| std::io::Error::other("no randomness for the request-state key"),
                )?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                crate::fsutil::write_atomic(&path, &b, Some(0o600))?;
                b
            }
            Err(e) => return Err(e),
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(StateKey::new(&key))
    }

    fn seal(&self, aad: &[u8; 32], plain: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .expect("system randomness");
        let mut buf = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .expect("ChaCha20-Poly1305 seals any length this small");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{PREFIX}{}", B64.encode(out))
    }

    fn open(&self, aad: &[u8; 32], sealed: &str) -> Option<Vec<u8>> {
        let raw = B64.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, body) = raw.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = body.to_vec();
        let plain = self.0.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
        Some(plain.to_vec())
    }
}

/// What a state is bound to: it opens only for the same request by the same
/// caller.
pub struct Binding {
    digest: [u8; 32],
}

impl Binding {
    /// The binding of `method` on `target` with `arguments` (as sent) by
    /// `subject` through `client`.
    pub fn new(
        method: &str,
        target: &str,
        arguments: &str,
        subject: Option<&str>,
        client: Option<&str>,
    ) -> Binding {
        let mut h = Sha256::new();
        for part in [
            "stockade-mrtr-v1",
            method,
            target,
            &crate::audit::sha256_hex(arguments.as_bytes()),
            subject.unwrap_or(""),
            client.unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        Binding {
            digest: h.finalize().into(),
        }
    }
}

/// The sealed contents of a `requestState`.
#[derive(Serialize, Deserialize, Default)]
struct State {
    /// Unix seconds after which the state is refused.
    exp: i64,
    /// Rounds completed so far.
    round: u32,
    /// Every answer so far.
    answers: Vec<Answered>,
    /// The questions the last round asked.
    pending: Vec<Question>,
}

/// An answer, with the digest of the question it answers.
#[derive(Serialize, Deserialize, Clone)]
struct Answered {
    key: String,
    req: String,
    res: Value,
}

/// A question asked, by key and digest.
#[derive(Serialize, Deserialize, Clone)]
struct Question {
    key: String,
    req: String,
}

/// The kinds of question a plugin can ask its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `sampling/createMessage`.
    Sampling,
    /// `elicitation/create`.
    Elicitation,
}

impl Kind {
    fn method(self) -> &'static str {
        match self {
            Kind::Sampling => "sampling/createMessage",
            Kind::Elicitation => "elicitation/create",
        }
    }

    fn capability(self) -> &'static str {
        match self {
            Kind::Sampling => "sampling",
            Kind::Elicitation => "elicitation",
        }
    }
}

/// What a question gets.
pub enum Asked {
    /// The client's answer (from an earlier round or this request).
    Answer(Value),
    /// The request did not declare the capability.
    Unsupported,
    /// Nobody has answered it yet: the call ends and asks.
    Suspend,
    /// The call asked more than the bounds allow.
    TooMany(String),
}

/// One run of a modern call: what the client has answered, what the plugin
/// asks that nobody has, and what the request declared it can do.
pub struct Round {
    state: State,
    /// Answers sent with this request for the questions of the last round
    /// (or, on the first round, for any key).
    fresh: HashMap<String, Value>,
    /// Whether fresh answers may answer any key (no state: the first round).
    first: bool,
    declared: BTreeSet<&'static str>,
    inner: Mutex<Inner>,
    suspended: CancellationToken,
}

#[derive(Default)]
struct Inner {
    ordinals: HashMap<&'static str, u32>,
    /// Answers used by this run (carried into the next state).
    used: Vec<Answered>,
    /// The question that ended this run.
    asked: Option<(String, Kind, Value, String)>,
    /// Capabilities a question needed that the request did not declare.
    missing: BTreeSet<&'static str>,
}

fn digest(params: &Value) -> String {
    crate::audit::sha256_hex(params.to_string().as_bytes())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Round {
    /// The round of a request that declared `declared` (`"sampling"`,
    /// `"elicitation"`) and sent `responses` and `state` (both optional).
    /// A state that does not open for `binding`, has expired, or answers sent
    /// that are not objects are refused (-32602).
    pub fn begin(
        key: &StateKey,
        binding: &Binding,
        declared: BTreeSet<&'static str>,
        responses: Option<&BTreeMap<String, Value>>,
        request_state: Option<&str>,
    ) -> Result<Round, ErrorData> {
        let refused = |why: &str| {
            ErrorData::invalid_params(
                format!("requestState {why}: send the request again without it to start over"),
                None,
            )
        };
        let (state, first) = match request_state {
            None => (
                State {
                    exp: now() + STATE_TTL_SECS,
                    ..State::default()
                },
                true,
            ),
            Some(sealed) => {
                let plain = key.open(&binding.digest, sealed).ok_or_else(|| {
                    refused("failed verification (changed, or for another request)")
                })?;
                let state: State =
                    serde_json::from_slice(&plain).map_err(|_| refused("failed verification"))?;
                if state.exp < now() {
                    return Err(refused("has expired"));
                }
                (state, false)
            }
        };
        let mut fresh = HashMap::new();
        for (k, v) in responses.into_iter().flatten() {
            if !v.is_object() {
                return Err(ErrorData::invalid_params(
                    format!(
                        "inputResponses[`{}`] is not an object: answer with the request's result",
                        k.chars().take(64).collect::<String>()
                    ),
                    None,
                ));
            }
            fresh.insert(k.clone(), v.clone());
        }
        Ok(Round {
            state,
            fresh,
            first,
            declared,
            inner: Mutex::default(),
            suspended: CancellationToken::new(),
        })
    }

    /// The plugin asks `kind` with `params`.
    pub fn ask(&self, kind: Kind, params: Value) -> Asked {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !self.declared.contains(kind.capability()) {
            inner.missing.insert(kind.capability());
            return Asked::Unsupported;
        }
        let n = inner.ordinals.entry(kind.capability()).or_insert(0);
        *n += 1;
        let key = format!("{}-{n}", kind.capability());
        let req = digest(&params);
        let earlier = self
            .state
            .answers
            .iter()
            .find(|a| a.key == key && a.req == req)
            .map(|a| a.res.clone());
        let now_answered = self.fresh.get(&key).filter(|_| {
            self.first
                || self
                    .state
                    .pending
                    .iter()
                    .any(|q| q.key == key && q.req == req)
        });
        if let Some(res) = earlier.or_else(|| now_answered.cloned()) {
            inner.used.push(Answered {
                key,
                req,
                res: res.clone(),
            });
            return Asked::Answer(res);
        }
        if self.state.round >= MAX_ROUNDS {
            return Asked::TooMany(format!(
                "the call asked its client questions in more than {MAX_ROUNDS} rounds"
            ));
        }
        if inner.asked.is_none() {
            inner.asked = Some((key, kind, params, req));
        }
        self.suspended.cancel();
        Asked::Suspend
    }

    /// Resolves when the plugin asked something nobody has answered.
    pub async fn suspended(&self) {
        self.suspended.cancelled().await
    }

    /// Whether the plugin asked something nobody has answered.
    pub fn is_suspended(&self) -> bool {
        self.suspended.is_cancelled()
    }

    /// The capabilities questions needed that the request did not declare
    /// (`{"sampling": {}}`), if any.
    pub fn missing_capabilities(&self) -> Option<Value> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (!inner.missing.is_empty()).then(|| {
            Value::Object(
                inner
                    .missing
                    .iter()
                    .map(|c| ((*c).to_owned(), json!({})))
                    .collect(),
            )
        })
    }

    /// The key of the question that ended this run, for the audit log.
    pub fn asked_key(&self) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.asked.as_ref().map(|a| a.0.clone())
    }

    /// The `input_required` result: the question that ended the run and the
    /// sealed state carrying every answer used so far. Fails (with what to
    /// tell the model) when the state would pass [`MAX_STATE_BYTES`].
    pub fn input_required(&self, key: &StateKey, binding: &Binding) -> Result<Value, String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some((k, kind, params, req)) = inner.asked.clone() else {
            return Err("internal error: no question to ask".into());
        };
        let state = State {
            exp: self.state.exp,
            round: self.state.round + 1,
            answers: inner.used.clone(),
            pending: vec![Question {
                key: k.clone(),
                req,
            }],
        };
        let plain = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
        if plain.len() > MAX_STATE_BYTES {
            return Err(format!(
                "the call's answers so far pass {} KiB; ask the client for less",
                MAX_STATE_BYTES >> 10
            ));
        }
        let mut params = params;
        if kind == Kind::Elicitation {
            params["mode"] = "form".into();
        }
        Ok(json!({
            "resultType": "input_required",
            "inputRequests": { k: { "method": kind.method(), "params": params } },
            "requestState": key.seal(&binding.digest, &plain),
        }))
    }
}

/// The MRTR side of one modern request: its round and what its state is
/// bound to.
pub struct Exchange {
    round: Arc<Round>,
    binding: Binding,
}

/// How a run of a modern request ends, as far as MRTR is concerned.
pub enum Settled {
    /// It asked: answer `input_required`.
    Asked(rmcp::model::InputRequiredResult),
    /// It asked, but the question cannot be sent (past the bounds): the
    /// call fails with this reason.
    CannotAsk(String),
    /// A question needed a capability the request did not declare, and the
    /// run then failed: answer `-32021`.
    Missing(rmcp::model::ClientCapabilities),
    /// Nothing to do with MRTR: answer as usual.
    Done,
}

/// What a run that asked ends with.
struct InputRequired {
    /// The `input_required` result.
    result: Value,
    /// The key of the question (for the audit log).
    key: String,
}

impl Exchange {
    /// The exchange of `method` on `target` with `arguments` (as sent) for the
    /// request `cx`, from the answers and state it carries; `None` for a
    /// legacy request (its questions go to the session's client).
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        key: &StateKey,
        modern: bool,
        cx: &RequestContext<RoleServer>,
        method: &str,
        target: &str,
        arguments: &str,
        responses: Option<&BTreeMap<String, Value>>,
        request_state: Option<&str>,
    ) -> Result<Option<Exchange>, ErrorData> {
        if !modern {
            return Ok(None);
        }
        let who = super::principal(cx);
        let binding = Binding::new(
            method,
            target,
            arguments,
            who.as_ref().map(|p| p.subject.as_str()),
            who.as_ref().and_then(|p| p.client_id.as_deref()),
        );
        let caps = cx.client_capabilities().unwrap_or_default();
        let mut declared = BTreeSet::new();
        if caps.sampling.is_some() {
            declared.insert("sampling");
        }
        if caps.elicitation.is_some() {
            declared.insert("elicitation");
        }
        let round = Round::begin(key, &binding, declared, responses, request_state)?;
        Ok(Some(Exchange {
            round: Arc::new(round),
            binding,
        }))
    }

    /// The round, for the call's link.
    pub fn round(&self) -> Arc<Round> {
        self.round.clone()
    }

    /// When the run stopped to ask: the `input_required` result, or why it
    /// cannot be sent (what to tell the model instead).
    fn asked(&self, key: &StateKey) -> Option<Result<InputRequired, String>> {
        if !self.round.is_suspended() {
            return None;
        }
        Some(
            self.round
                .input_required(key, &self.binding)
                .map(|result| InputRequired {
                    result,
                    key: self.round.asked_key().unwrap_or_default(),
                }),
        )
    }

    /// The capabilities the run's questions needed and the request did not
    /// declare (`{"sampling": {}}`), as rmcp's type, if any.
    fn missing(&self) -> Option<rmcp::model::ClientCapabilities> {
        self.round
            .missing_capabilities()
            .and_then(|v| serde_json::from_value(v).ok())
    }

    /// How the run of `exchange` (none for a legacy request) ends, given
    /// whether the operation `failed`; its audit `record` says so.
    pub fn settle(
        exchange: Option<&Exchange>,
        key: &StateKey,
        failed: bool,
        record: &mut crate::audit::ToolCallRecord,
    ) -> Settled {
        let Some(x) = exchange else {
            return Settled::Done;
        };
        match x.asked(key) {
            Some(Ok(asked)) => match serde_json::from_value(asked.result) {
                Ok(result) => {
                    record.outcome = "input_required";
                    record.error = Some(format!("asked the client `{}`", asked.key));
                    Settled::Asked(result)
                }
                Err(e) => {
                    record.outcome = "failed";
                    record.error = Some(format!("internal error: {e}"));
                    Settled::CannotAsk(format!("internal error: {e}"))
                }
            },
            Some(Err(why)) => {
                record.outcome = "failed";
                record.error = Some(why.chars().take(300).collect());
                Settled::CannotAsk(why)
            }
            None => match x.missing().filter(|_| failed) {
                Some(caps) => {
                    record.outcome = "missing_client_capability";
                    Settled::Missing(caps)
                }
                None => Settled::Done,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StateKey {
        StateKey::new(&[7u8; 32])
    }

    fn binding(args: &str) -> Binding {
        Binding::new("tools/call", "t", args, Some("alice"), Some("c1"))
    }

    fn caps() -> BTreeSet<&'static str> {
        ["sampling", "elicitation"].into_iter().collect()
    }

    /// One round: runs `asks` against a round begun from `responses`/`state`;
    /// returns the answers got and the next state, if the run ended asking.
    fn run(
        asks: &[(Kind, Value)],
        responses: Option<Value>,
        state: Option<&str>,
        b: &Binding,
    ) -> Result<(Vec<Value>, Option<Value>), ErrorData> {
        let responses: Option<std::collections::BTreeMap<String, Value>> =
            responses.map(|r| serde_json::from_value(r).unwrap());
        let round = Round::begin(&key(), b, caps(), responses.as_ref(), state)?;
        let mut got = Vec::new();
        for (kind, params) in asks {
            match round.ask(*kind, params.clone()) {
                Asked::Answer(v) => got.push(v),
                Asked::Suspend => return Ok((got, Some(round.input_required(&key(), b).unwrap()))),
                Asked::Unsupported => panic!("declared"),
                Asked::TooMany(m) => panic!("{m}"),
            }
        }
        Ok((got, None))
    }

    #[test]
    fn rounds_answer_in_order_and_the_state_is_bound() {
        let b = binding("{}");
        let asks = [
            (Kind::Elicitation, json!({"message": "name?"})),
            (Kind::Sampling, json!({"messages": [], "maxTokens": 5})),
        ];
        let (got, ask) = run(&asks, None, None, &b).unwrap();
        assert!(got.is_empty());
        let ask = ask.unwrap();
        assert_eq!(
            ask["inputRequests"]["elicitation-1"]["method"],
            "elicitation/create"
        );
        let state = ask["requestState"].as_str().unwrap().to_owned();

        let r1 = json!({"elicitation-1": {"action": "accept", "content": {"name": "Ann"}}});
        let (got, ask) = run(&asks, Some(r1.clone()), Some(&state), &b).unwrap();
        assert_eq!(got.len(), 1);
        let ask = ask.unwrap();
        assert!(ask["inputRequests"]["sampling-1"].is_object(), "{ask}");
        let state2 = ask["requestState"].as_str().unwrap().to_owned();

        let r2 = json!({"sampling-1": {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"}});
        let (got, ask) = run(&asks, Some(r2), Some(&state2), &b).unwrap();
        assert!(ask.is_none());
        assert_eq!(
            got[0]["content"]["name"], "Ann",
            "the first answer comes from the state"
        );
        assert_eq!(got[1]["content"]["text"], "hi");

        // Tampered, or another caller's, or other arguments: refused.
        let mut bad = state.clone();
        bad.push('x');
        assert!(run(&asks, Some(r1.clone()), Some(&bad), &b).is_err());
        let bob = Binding::new("tools/call", "t", "{}", Some("bob"), Some("c1"));
        assert!(run(&asks, Some(r1.clone()), Some(&state), &bob).is_err());
        assert!(run(&asks, Some(r1), Some(&state), &binding("{\"x\":1}")).is_err());
    }

    #[test]
    fn an_answer_is_used_only_for_its_own_question() {
        let b = binding("{}");
        let first = [(Kind::Elicitation, json!({"message": "name?"}))];
        let (_, ask) = run(&first, None, None, &b).unwrap();
        let state = ask.unwrap()["requestState"].as_str().unwrap().to_owned();
        // The plugin now asks something else under the same key: asked again.
        let other = [(Kind::Elicitation, json!({"message": "password?"}))];
        let r = json!({"elicitation-1": {"action": "accept", "content": {"name": "Ann"}}});
        let (got, ask) = run(&other, Some(r), Some(&state), &b).unwrap();
        assert!(got.is_empty());
        assert!(ask.is_some());
    }

    #[test]
    fn undeclared_capabilities_are_named() {
        let b = binding("{}");
        let round = Round::begin(&key(), &b, BTreeSet::new(), None, None).unwrap();
        assert!(matches!(
            round.ask(Kind::Sampling, json!({})),
            Asked::Unsupported
        ));
        assert_eq!(round.missing_capabilities(), Some(json!({"sampling": {}})));
        assert!(!round.is_suspended());
    }

    #[test]
    fn rounds_are_bounded() {
        let b = binding("{}");
        let asks: Vec<(Kind, Value)> = (0..=MAX_ROUNDS)
            .map(|i| (Kind::Elicitation, json!({"message": format!("q{i}")})))
            .collect();
        let mut state: Option<String> = None;
        let mut responses: Option<Value> = None;
        for round in 0..MAX_ROUNDS {
            let (_, ask) = run(&asks, responses.clone(), state.as_deref(), &b).unwrap();
            let ask = ask.unwrap_or_else(|| panic!("round {round} asks"));
            let key = ask["inputRequests"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .clone();
            responses = Some(json!({ key: {"action": "decline"} }));
            state = Some(ask["requestState"].as_str().unwrap().to_owned());
        }
        let responses: std::collections::BTreeMap<String, Value> =
            serde_json::from_value(responses.unwrap()).unwrap();
        let round = Round::begin(&key(), &b, caps(), Some(&responses), state.as_deref()).unwrap();
        let mut last = None;
        for (kind, params) in &asks {
            match round.ask(*kind, params.clone()) {
                Asked::Answer(_) => continue,
                other => {
                    last = Some(other);
                    break;
                }
            }
        }
        assert!(matches!(last, Some(Asked::TooMany(_))));
    }
}
