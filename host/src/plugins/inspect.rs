//! Reading what a plugin file declares about itself, without running it.

use serde_json::Value;

/// The custom section the SDK writes the declared capabilities into.
pub const CAPABILITIES_SECTION: &str = "stockade:capabilities";

/// The capabilities a component declares (the JSON of its
/// `stockade:capabilities` custom section, in any nested core module), if any.
/// A declaration grants nothing; it is shown to the operator.
pub fn declared_capabilities(bytes: &[u8]) -> Result<Option<Value>, String> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| e.to_string())?;
        if let wasmparser::Payload::CustomSection(reader) = payload
            && reader.name() == CAPABILITIES_SECTION
        {
            let value: Value = serde_json::from_slice(reader.data())
                .map_err(|e| format!("the {CAPABILITIES_SECTION} section is not JSON: {e}"))?;
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// `s` made safe to print on a terminal: control characters (escape sequences
/// included) and bidirectional-text overrides are shown as `\u{..}` escapes.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A one-line TOML basic string holding `s` exactly: quotes, backslashes and
/// every control character escaped (valid as a value and as a key).
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `k` as a TOML key: bare when it can be, quoted otherwise.
fn toml_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { k.to_owned() } else { toml_string(k) }
}

/// The config snippet granting what a plugin declares, for the operator to review.
/// Everything the plugin wrote is quoted as TOML data (keys too), so a hostile
/// declaration cannot add lines or tables of its own.
pub fn suggested_config(name: &str, digest: &str, declared: Option<&Value>) -> String {
    let table = format!("plugins.{}", toml_key(name));
    let mut out = format!(
        "[{table}]\ndigest = {}\n",
        toml_string(&format!("sha256:{digest}"))
    );
    let Some(d) = declared else {
        return out;
    };
    let list = |key: &str| -> Vec<String> {
        d.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let quoted = |v: &[String]| {
        v.iter()
            .map(|s| toml_string(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut grants = String::new();
    if !list("sql").is_empty() {
        grants.push_str(&format!("sql = [{}]\n", quoted(&list("sql"))));
    }
    if !list("client").is_empty() {
        grants.push_str(&format!("client = [{}]\n", quoted(&list("client"))));
    }
    for k in list("env") {
        grants.push_str(&format!("env.{} = \"...\"\n", toml_key(&k)));
    }
    for g in list("dirs") {
        grants.push_str(&format!(
            "dirs = [{{ host = \"/path/on/host\", guest = {}, mode = \"ro\" }}]\n",
            toml_string(&g)
        ));
    }
    if !grants.is_empty() {
        out.push_str(&format!("[{table}.grants]\n{grants}"));
    }
    if !list("http").is_empty() {
        out.push_str(&format!(
            "[{table}.grants.http]\nhosts = [{}]\n",
            quoted(&list("http"))
        ));
    }
    for p in list("exec") {
        out.push_str(&format!(
            "[[{table}.grants.exec]]\nprogram = {}\n",
            toml_string(&p)
        ));
    }
    out
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
