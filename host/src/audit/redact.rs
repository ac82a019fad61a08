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
    redact_map(args, &mut left)
}

/// A copy of `args` with secret-looking values masked and long strings and arrays
/// truncated so the whole stays near `budget` bytes.
pub fn redact_arguments(args: &Value, budget: usize) -> Value {
    let mut left = budget;
    redact(args, &mut left)
}

fn redact(v: &Value, left: &mut usize) -> Value {
    match v {
        Value::Object(m) => redact_map(m, left),
        Value::Array(a) => {
            let mut out = Vec::new();
            for item in a {
                if *left == 0 {
                    out.push(Value::from(format!("… {} more", a.len() - out.len())));
                    break;
                }
                out.push(redact(item, left));
            }
            Value::Array(out)
        }
        Value::String(s) => {
            let keep = (*left).min(s.len()).min(MAX_STRING);
            *left -= keep;
            if keep < s.len() {
                let mut cut = keep;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                Value::from(format!("{}… ({} bytes)", &s[..cut], s.len()))
            } else {
                v.clone()
            }
        }
        other => {
            *left = left.saturating_sub(8);
            other.clone()
        }
    }
}

fn redact_map(m: &Map<String, Value>, left: &mut usize) -> Value {
    let mut out = Map::new();
    for (k, v) in m {
        if *left == 0 {
            out.insert("…".into(), Value::from("truncated"));
            break;
        }
        *left = left.saturating_sub(k.len() + 4);
        let value = if is_secret(k) && !v.is_object() && !v.is_array() {
            Value::from(MASK)
        } else if is_secret(k) {
            mask_all(v)
        } else {
            redact(v, left)
        };
        out.insert(k.clone(), value);
    }
    Value::Object(out)
}

fn mask_all(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), mask_all(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(mask_all).collect()),
        _ => Value::from(MASK),
    }
}
