//! PostgreSQL connection options from what a config names: a URL without a
//! password and a file whose first line is the password. One reader for the
//! shared store (`auth::store`), the shared figures (`metrics::shared`) and
//! `[sql.NAME]` sources (`capabilities::sql_postgres`).

use std::path::Path;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

/// Options for `url` as `application_name`, with the password from
/// `password_file`. Errors read `"{url_context}: …"` or
/// `"cannot read {password_context} PATH: …"`.
pub fn options(
    url: &str,
    password_file: Option<&Path>,
    application_name: &str,
    url_context: &str,
    password_context: &str,
) -> Result<PgConnectOptions, String> {
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| format!("{url_context}: {e}"))?
        .application_name(application_name);
    if let Some(file) = password_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {password_context} {}: {e}", file.display()))?;
        options = options.password(text.lines().next().unwrap_or_default());
    }
    Ok(options)
}
