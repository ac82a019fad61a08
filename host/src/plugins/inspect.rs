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
        if let wasmparser::Payload::CustomSection(reader) = payload {
            if reader.name() == CAPABILITIES_SECTION {
                let value: Value = serde_json::from_slice(reader.data())
                    .map_err(|e| format!("the {CAPABILITIES_SECTION} section is not JSON: {e}"))?;
                return Ok(Some(value));
            }
        }
    }
    Ok(None)
}

/// The config snippet granting what a plugin declares, for the operator to review.
pub fn suggested_config(name: &str, digest: &str, declared: Option<&Value>) -> String {
    let mut out = format!("[plugins.{name}]\ndigest = \"sha256:{digest}\"\n");
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
            .map(|s| format!("{s:?}"))
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
        grants.push_str(&format!("env.{k} = \"...\"\n"));
    }
    for g in list("dirs") {
        grants.push_str(&format!(
            "dirs = [{{ host = \"/path/on/host\", guest = {g:?}, mode = \"ro\" }}]\n"
        ));
    }
    if !grants.is_empty() {
        out.push_str(&format!("[plugins.{name}.grants]\n{grants}"));
    }
    if !list("http").is_empty() {
        out.push_str(&format!(
            "[plugins.{name}.grants.http]\nhosts = [{}]\n",
            quoted(&list("http"))
        ));
    }
    for p in list("exec") {
        out.push_str(&format!(
            "[[plugins.{name}.grants.exec]]\nprogram = {p:?}\n"
        ));
    }
    out
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
