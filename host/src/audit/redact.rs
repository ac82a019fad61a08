//! Masking secrets in audited arguments.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Key fragments whose values are masked (case-insensitive substring match).
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "authorization",
    "cookie",
    "credential",
    "private",
    "session",
];

/// The most bytes of one string value kept.
const MAX_STRING: usize = 256;

/// The most bytes of one object key kept (a client may send any key).
const MAX_KEY: usize = 128;

/// The mask written in place of a secret.
pub const MASK: &str = "[redacted]";

/// The sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| k.contains(s))
}

/// [`redact_arguments`] for an arguments object, without copying it first.
pub fn redact_object(args: &Map<String, Value>, budget: usize) -> Value {
    let mut left = budget;
    redact_map(args, &mut left, false)
}

/// A copy of `args` with secret-looking values masked and long strings and arrays
/// truncated so the whole stays near `budget` bytes.
pub fn redact_arguments(args: &Value, budget: usize) -> Value {
    let mut left = budget;
    redact(args, &mut left, false)
}

/// `v` within the budget `left`; `masked` (under a secret-looking key): every
/// leaf is [`MASK`], within the same budget as the rest.
fn redact(v: &Value, left: &mut usize, masked: bool) -> Value {
    match v {
        Value::Object(m) => redact_map(m, left, masked),
        Value::Array(a) => {
            let mut out = Vec::new();
            for item in a {
                if *left == 0 {
                    out.push(Value::from(format!("… {} more", a.len() - out.len())));
                    break;
                }
                out.push(redact(item, left, masked));
            }
            Value::Array(out)
        }
        _ if masked => {
            *left = left.saturating_sub(MASK.len() + 2);
            Value::from(MASK)
        }
        Value::String(s) => {
            let keep = (*left).min(s.len()).min(MAX_STRING);
            *left -= keep;
            Value::from(cut(s, keep))
        }
        other => {
            *left = left.saturating_sub(8);
            other.clone()
        }
    }
}

/// `s` cut to `max` bytes (at a character boundary), saying how long it was.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

fn redact_map(m: &Map<String, Value>, left: &mut usize, masked: bool) -> Value {
    let mut out = Map::new();
    for (k, v) in m {
        if *left == 0 {
            out.insert("…".into(), Value::from("truncated"));
            break;
        }
        let key = cut(k, MAX_KEY);
        *left = left.saturating_sub(key.len() + 4);
        out.insert(key, redact(v, left, masked || is_secret(k)));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A client's keys and a secret's nested contents count against the
    /// budget like everything else: no argument makes an unbounded audit line.
    #[test]
    fn keys_and_masked_secrets_are_bounded() {
        let huge_key = "k".repeat(1 << 20);
        let mut secret = Map::new();
        for i in 0..100_000 {
            secret.insert(format!("field-{i}-{}", "x".repeat(100)), json!([1, 2, 3]));
        }
        let args = json!({ huge_key.clone(): "v", "token": secret, "api_key": "s3cret" });
        let out = redact_object(args.as_object().unwrap(), 2048);
        let text = out.to_string();
        assert!(text.len() < 16 << 10, "{} bytes", text.len());
        assert!(!text.contains("s3cret"));
        assert!(
            text.contains(&format!("… ({} bytes)", huge_key.len())),
            "the key says it was cut"
        );
        assert!(text.contains("truncated"), "the secret object is cut short");
        assert!(!text.contains("\"1\""), "no leaf of a secret is kept");
    }
}
