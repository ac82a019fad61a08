//! Property tests of the config reader: any text is read or refused (never a
//! panic), every refusal says something, a password written into a database
//! URL is refused and never echoed, and HTTP host patterns match what they
//! say.

use proptest::prelude::*;

use super::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A password: recognisable in any message that echoes it.
fn password() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{8}".prop_map(|s| format!("Pw{s}"))
}

/// A line of config holding `pw` where a password does not belong: in a
/// database URL (user info or `password=`), well formed or not, in the right
/// key or the wrong one.
fn secret_line(pw: String) -> impl Strategy<Value = (String, bool)> {
    let urls = vec![
        format!("postgres://reader:{pw}@localhost/shop"),
        format!("postgres://reader:{pw}@db.example/shop?sslmode=require"),
        format!("postgres://reader@localhost/shop?password={pw}"),
        format!("postgresql://reader@localhost/shop?sslmode=disable&password={pw}"),
        format!("postgres://reader@localhost/shop?PASSWORD={pw}"),
        format!("postgres://reader:{pw}@/shop?host=/run/postgresql"),
        format!("postgres://reader:{pw}@db.example:99999/shop"),
        format!("postgres://reader:{pw}@local host/shop"),
        format!("mysql://reader:{pw}@localhost/shop"),
    ];
    (prop::sample::select(urls), 0usize..9).prop_map(|(url, shape)| match shape {
        // Where a URL belongs: refused, because of the password.
        0 => (format!("[sql.shop]\npostgres = \"{url}\"\n"), true),
        1 => (
            format!(
                "[store]\nurl = \"{url}\"\nsecret_file = \"/etc/s\"\npassword_file = \"/etc/p\"\n"
            ),
            true,
        ),
        // Broken TOML on the same line.
        2 => (format!("[sql.shop]\npostgres = \"{url}\n"), false),
        3 => (format!("[sql.shop]\npostgres = \"{url}\" x\n"), false),
        4 => (format!("[sql.shop]\npostgres = {url}\n"), false),
        // The wrong type or the wrong key.
        5 => (format!("[plugins.web.grants]\nsql = \"{url}\"\n"), false),
        6 => (format!("[auth]\nmode = \"{url}\"\n"), false),
        7 => (format!("max_body_kib = \"{url}\"\n"), false),
        _ => (format!("[store]\nurll = \"{url}\"\n"), false),
    })
}

/// Lines that are fine, wrong, or not TOML at all.
fn other_line() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "listen = \"127.0.0.1:8080\"\n",
                "watch = true\n",
                "[limits]\nmemory_mib = 0\n",
                "[limits]\nfuel = 100\n",
                "[plugins.echo.limits]\nmemory_mib = 8\n",
                "[plugins.web.grants.http]\nhosts = [\"*.example.com\", \"a b\"]\n",
                "[plugins.\"bad name\"]\n",
                "[auth]\nmode = \"none\"\n",
                "[[plugins.sh.grants.exec]]\nprogram = \"/bin/ls\"\nargs = [\"a)|(b\"]\n",
                "= =\n",
                "[[[\n",
                "\"\"\"\n",
                "x = 'unterminated\n",
                "[sql.x]\nsqlite = \"rel.db\"\n",
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z_.\\[\\]=\" \\n0-9]{0,30}",
    ]
}

fn config_text() -> impl Strategy<Value = (String, String, bool)> {
    password().prop_flat_map(|pw| {
        (
            proptest::collection::vec(other_line(), 0..3),
            secret_line(pw.clone()),
            any::<prop::sample::Index>(),
        )
            .prop_map(move |(mut lines, (secret, must_refuse), at)| {
                let i = at.index(lines.len() + 1);
                lines.insert(i, secret);
                (lines.concat(), pw.clone(), must_refuse)
            })
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text: read or refused with a message, never a panic.
    #[test]
    fn any_text_is_read_or_refused(text in "\\PC{0,200}|[a-z\\[\\]=\"'{},.\\n #0-9]{0,120}") {
        if let Err(e) = Config::from_toml(&text) {
            prop_assert!(!e.to_string().trim().is_empty());
            if let ConfigError::Invalid(problems) = &e {
                prop_assert!(!problems.is_empty());
                prop_assert!(problems.iter().all(|p| !p.trim().is_empty()));
            }
        }
    }

    /// A password in a database URL is refused where the URL belongs, and no
    /// message ever echoes it (the terminal and the journal are no secret
    /// store either).
    #[test]
    fn passwords_in_config_are_refused_and_never_echoed((text, pw, must_refuse) in config_text()) {
        match Config::from_toml(&text) {
            Ok(_) => prop_assert!(!must_refuse, "accepted a password in {:?}", text),
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(!shown.trim().is_empty());
                prop_assert!(!shown.contains(&pw), "{} echoed in:\n{}", pw, shown);
            }
        }
    }

    /// `check_postgres_url` alone: a URL carrying a password in any form the
    /// client library reads is refused, and the refusal does not echo it.
    #[test]
    fn database_urls_never_carry_passwords(
        pw in password(),
        user in prop::sample::select(&["reader", "", "re%40der"][..]),
        host in prop::sample::select(&["localhost", "db.example", "[::1]", "", "127.0.0.1:5432"][..]),
        query in prop::sample::select(&[
            "", "?password=PW", "?sslmode=require&password=PW", "?Password=PW", "?pass%77ord=PW",
            "?sslmode=require", "?password", "?password=",
        ][..]),
        in_userinfo in any::<bool>(),
    ) {
        let userinfo = if in_userinfo { format!("{user}:{pw}@") } else if user.is_empty() { String::new() } else { format!("{user}@") };
        let url = format!("postgres://{userinfo}{host}/shop{}", query.replace("PW", &pw));
        let mut problems = Vec::new();
        store::check_postgres_url("sql.shop.postgres", &url, &mut problems);
        let parsed = url::Url::parse(&url);
        let carries = parsed.as_ref().is_ok_and(|u| {
            u.password().is_some()
                || u.query_pairs().any(|(k, v)| k.eq_ignore_ascii_case("password") && !v.is_empty())
        });
        if carries {
            prop_assert!(
                problems.iter().any(|p| p.contains("password")),
                "{} accepted: {:?}", url, problems
            );
        }
        for p in &problems {
            prop_assert!(!p.contains(&pw), "{} echoed: {}", pw, p);
        }
    }

    /// Host patterns: `*.domain` matches proper subdomains only, a plain name
    /// only itself (in any case), and without a port only 80 and 443.
    #[test]
    fn host_patterns_match_what_they_say(
        pattern in "(\\*\\.)?[a-z]{1,3}(\\.[a-z]{1,3})?(:[0-9]{1,3})?|\\PC{0,12}",
        host in "[a-zA-Z.]{0,9}|\\[::1\\]|\\PC{0,8}",
        port in prop::sample::select(&[80u16, 443, 8080, 0, 1, 22][..]),
    ) {
        let Ok(p) = HostPattern::parse(&pattern) else { return Ok(()); };
        let spec = pattern.trim().to_ascii_lowercase();
        let (name, pport) = match spec.rsplit_once(':') {
            Some((n, pp)) if !spec.starts_with('[') => (n.to_owned(), pp.parse::<u16>().ok()),
            _ => (spec.clone(), None),
        };
        let h = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let host_ok = match name.strip_prefix("*.") {
            Some(domain) => h.ends_with(&format!(".{domain}")) && h.len() > domain.len() + 1,
            None => h == name,
        };
        let port_ok = match pport {
            Some(pp) => pp == port,
            None => port == 80 || port == 443,
        };
        if !spec.starts_with('[') {
            prop_assert_eq!(p.matches(&host, port), host_ok && port_ok, "{} vs {}:{}", pattern, host, port);
        }
        // A wildcard never matches its bare domain or a look-alike suffix.
        if let Some(domain) = name.strip_prefix("*.") {
            prop_assert!(!p.matches(domain, 443));
            let look_alike = format!("evil{domain}");
            prop_assert!(!p.matches(&look_alike, 443));
        }
    }
}
