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

/// Whether `s` is a plain absolute path: `/`, then letters, digits, `_ . + -`
/// and `/` (no `..` component).
fn is_plain_path(s: &str) -> bool {
    s.starts_with('/')
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-/".contains(&b))
        && !s.split('/').any(|c| c == "..")
}

/// Whether `s` is a plain name: 1-64 letters, digits, `_` and `-`.
fn is_plain_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
}

/// The config snippet granting what a plugin declares, for the operator to review.
/// Only values that pass the same checks as the config (plain absolute paths,
/// variable and source names, valid host patterns, known client features) are
/// written, as TOML data; anything else a plugin declared is left out and
/// counted in a comment, so no free text from the plugin reaches the file.
pub fn suggested_config(name: &str, digest: &str, declared: Option<&Value>) -> String {
    let table = format!("plugins.{}", toml_key(name));
    let mut out = format!(
        "[{table}]\ndigest = {}\n",
        toml_string(&format!("sha256:{digest}"))
    );
    let Some(d) = declared else {
        return out;
    };
    let mut skipped = 0usize;
    let mut list = |key: &str, ok: &dyn Fn(&str) -> bool| -> Vec<String> {
        let values: Vec<&Value> = d
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let mut kept = Vec::new();
        for v in values {
            match v.as_str() {
                Some(s) if ok(s) => kept.push(s.to_owned()),
                _ => skipped += 1,
            }
        }
        kept
    };
    let sql = list("sql", &is_plain_name);
    let client = list("client", &|s: &str| matches!(s, "sampling" | "elicitation"));
    let env = list("env", &crate::config::is_valid_env_name);
    let dirs = list("dirs", &is_plain_path);
    let http = list("http", &|s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-*:[]".contains(&b))
            && crate::config::HostPattern::parse(s).is_ok()
    });
    let exec = list("exec", &is_plain_path);
    let quoted = |v: &[String]| {
        v.iter()
            .map(|s| toml_string(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut grants = String::new();
    // `metrics: ["read"]` in the SDK's macro (it takes lists), or `true`.
    let metrics = d
        .get("metrics")
        .is_some_and(|v| v.as_bool() == Some(true) || v.as_array().is_some_and(|a| !a.is_empty()));
    if metrics {
        grants.push_str("metrics = true\n");
    }
    if !sql.is_empty() {
        grants.push_str(&format!("sql = [{}]\n", quoted(&sql)));
    }
    if !client.is_empty() {
        grants.push_str(&format!("client = [{}]\n", quoted(&client)));
    }
    for k in &env {
        grants.push_str(&format!("env.{k} = \"...\"\n"));
    }
    for g in &dirs {
        grants.push_str(&format!(
            "dirs = [{{ host = \"/path/on/host\", guest = {}, mode = \"ro\" }}]\n",
            toml_string(g)
        ));
    }
    if !grants.is_empty() {
        out.push_str(&format!("[{table}.grants]\n{grants}"));
    }
    if !http.is_empty() {
        out.push_str(&format!(
            "[{table}.grants.http]\nhosts = [{}]\n",
            quoted(&http)
        ));
    }
    for p in &exec {
        out.push_str(&format!(
            "[[{table}.grants.exec]]\nprogram = {}\n",
            toml_string(p)
        ));
    }
    if skipped > 0 {
        out.push_str(&format!(
            "# {skipped} declared value(s) left out: not a plain path, name, host or client feature\n"
        ));
    }
    out
}

/// What a component *can* ask the host for, from its imports, whatever it
/// declares: one entry per capability, each naming its grant. Empty for pure
/// computation. Imports the host never links (sockets, say) are named too:
/// such a component is refused at load.
pub fn reachable_capabilities<'a>(imports: impl IntoIterator<Item = &'a str>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for name in imports {
        let interface = name.split('@').next().unwrap_or(name);
        let what = match interface {
            "wasi:http/outgoing-handler" => "http: outbound HTTP requests (grants.http)",
            "stockade:plugin/exec" => "exec: run programs (grants.exec)",
            "stockade:plugin/sql" => "sql: read-only queries (grants.sql)",
            "stockade:plugin/client" => "client: sampling and elicitation (grants.client)",
            "stockade:plugin/metrics" => {
                "metrics: the host's usage, performance and health figures (grants.metrics)"
            }
            "wasi:filesystem/preopens" | "wasi:filesystem/types" => {
                "dirs: files in granted directories (grants.dirs)"
            }
            "wasi:cli/environment" => "env: environment variables (grants.env)",
            i if i.starts_with("wasi:sockets/") => "sockets: raw network access (never granted)",
            _ => continue,
        };
        if !out.contains(&what) {
            out.push(what);
        }
    }
    out
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
