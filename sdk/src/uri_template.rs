//! Matching URIs against resource URI templates (RFC 6570), in time linear in
//! the URI's length.
//!
//! The host routes `resources/read` with this module and the SDK extracts the
//! variables with it, so both always agree on which URI a template serves.
//!
//! A template is literal text with `{name}` expressions. A simple expression
//! (`{name}`, RFC 6570 level 1) matches one or more characters other than `/`,
//! `?` and `#`; a reserved or fragment expression (`{+name}`, `{#name}`, level 2)
//! matches one or more characters of any kind. Everything outside braces must
//! appear in the URI as is. Other operators and malformed templates match
//! nothing.
//!
//! Matching is a dynamic programme over (template part, URI position), so a
//! hostile URI costs `O(uri length × template length)`, never exponential time.

/// The longest URI this module matches; longer URIs match nothing.
pub const MAX_URI_LEN: usize = 64 * 1024;

/// The longest template this module accepts; longer templates match nothing.
pub const MAX_TEMPLATE_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part<'a> {
    /// Text that must appear as is.
    Literal(&'a str),
    /// A variable; `true` if it may contain `/`, `?` and `#`.
    Var(bool),
}

/// Splits a template into parts; `None` if it is malformed or too long.
fn parse(template: &str) -> Option<Vec<Part<'_>>> {
    if template.len() > MAX_TEMPLATE_LEN {
        return None;
    }
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                parts.push(Part::Literal(rest));
                break;
            }
            Some(i) if rest.as_bytes()[i] == b'}' => return None,
            Some(open) => {
                if open > 0 {
                    parts.push(Part::Literal(&rest[..open]));
                }
                let close = open + rest[open..].find('}')?;
                let expr = &rest[open + 1..close];
                let (any, name) = match expr.as_bytes().first() {
                    Some(b'+' | b'#') => (true, &expr[1..]),
                    _ => (false, expr),
                };
                let valid_name = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'%');
                if !valid_name {
                    return None;
                }
                parts.push(Part::Var(any));
                rest = &rest[close + 1..];
            }
        }
    }
    Some(parts)
}

/// Whether a simple variable may contain byte `b`.
fn in_simple_var(b: u8) -> bool {
    !matches!(b, b'/' | b'?' | b'#')
}

/// Whether `b` continues a UTF-8 character (is not the first byte of one).
fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// `reach[k][i]`: the first `k` parts match the first `i` bytes of `uri`.
fn reach_table(parts: &[Part<'_>], uri: &[u8]) -> Vec<Vec<bool>> {
    let n = uri.len();
    let mut reach = vec![vec![false; n + 1]; parts.len() + 1];
    reach[0][0] = true;
    for (k, part) in parts.iter().enumerate() {
        let (prev, next) = reach.split_at_mut(k + 1);
        let (prev, next) = (&prev[k], &mut next[0]);
        match part {
            Part::Literal(lit) => {
                let lit = lit.as_bytes();
                for i in 0..=n.saturating_sub(lit.len()) {
                    if prev[i] && uri[i..].starts_with(lit) {
                        next[i + lit.len()] = true;
                    }
                }
            }
            Part::Var(any) => {
                // next[j]: some i < j with prev[i] and uri[i..j] all allowed,
                // ending on a character boundary (a value is whole characters).
                let mut open = false; // a variable could be running at j
                for j in 1..=n {
                    let allowed = *any || in_simple_var(uri[j - 1]);
                    open = allowed && (open || prev[j - 1]);
                    next[j] = open && (j == n || !is_continuation(uri[j]));
                }
            }
        }
    }
    reach
}

/// Matches `uri` against `template`; returns the variables' values in template
/// order (as they appear in the URI, still percent-encoded), or `None`.
///
/// When a URI can be split in several ways, earlier variables take as much as
/// they can.
pub fn match_uri(template: &str, uri: &str) -> Option<Vec<String>> {
    if uri.len() > MAX_URI_LEN {
        return None;
    }
    let parts = parse(template)?;
    let bytes = uri.as_bytes();
    let reach = reach_table(&parts, bytes);
    if !reach[parts.len()][bytes.len()] {
        return None;
    }
    // Walk back from the end: later variables take as little as they can,
    // which leaves the most to earlier ones.
    let mut values = Vec::new();
    let mut end = bytes.len();
    for (k, part) in parts.iter().enumerate().rev() {
        match part {
            Part::Literal(lit) => end -= lit.len(),
            Part::Var(any) => {
                let mut start = end - 1;
                while !reach[k][start] {
                    start -= 1;
                }
                // `reach[k+1][end]` guarantees some start works; the nearest one
                // (the shortest value) is within the allowed run.
                debug_assert!(bytes[start..end].iter().all(|&b| *any || in_simple_var(b)));
                values.push(uri.get(start..end)?.to_owned());
                end = start;
            }
        }
    }
    values.reverse();
    Some(values)
}

/// Whether `uri` matches `template`.
pub fn matches(template: &str, uri: &str) -> bool {
    match_uri(template, uri).is_some()
}

/// Whether some URI matches both templates (a plain URI is a template without
/// variables). Used to keep one plugin from serving another's resources.
pub fn overlap(a: &str, b: &str) -> bool {
    let (Some(a), Some(b)) = (parse(a), parse(b)) else {
        return false;
    };
    // Expand literals to single characters so each position is one character
    // or one variable (a variable takes whole characters).
    enum Pos {
        Char(char),
        Var(bool),
    }
    fn positions(parts: &[Part<'_>]) -> Vec<Pos> {
        let mut out = Vec::new();
        for p in parts {
            match p {
                Part::Literal(l) => out.extend(l.chars().map(Pos::Char)),
                Part::Var(any) => out.push(Pos::Var(*any)),
            }
        }
        out
    }
    let allows = |any: bool, c: char| any || !matches!(c, '/' | '?' | '#');
    let (a, b) = (positions(&a), positions(&b));
    // States (i, j, ra, rb): at position i of a and j of b; ra/rb say whether the
    // variable at i/j has consumed at least one byte already.
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(0usize, 0usize, false, false)];
    while let Some(state) = stack.pop() {
        if !seen.insert(state) {
            continue;
        }
        let (i, j, ra, rb) = state;
        // A variable that has consumed a byte may end.
        if let Some(Pos::Var(_)) = a.get(i)
            && ra
        {
            stack.push((i + 1, j, false, rb));
        }
        if let Some(Pos::Var(_)) = b.get(j)
            && rb
        {
            stack.push((i, j + 1, ra, false));
        }
        if i == a.len() && j == b.len() {
            return true;
        }
        // Both consume one character.
        match (a.get(i), b.get(j)) {
            (Some(Pos::Char(x)), Some(Pos::Char(y))) if x == y => {
                stack.push((i + 1, j + 1, false, false));
            }
            (Some(Pos::Var(any)), Some(Pos::Char(y))) if allows(*any, *y) => {
                stack.push((i, j + 1, true, false));
            }
            (Some(Pos::Char(x)), Some(Pos::Var(any))) if allows(*any, *x) => {
                stack.push((i + 1, j, false, true));
            }
            // Two variables consuming the same character: some character both
            // allow exists (any letter), so they may run together.
            (Some(Pos::Var(_)), Some(Pos::Var(_))) => {
                stack.push((i, j, true, true));
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_variables_stop_at_slashes() {
        assert_eq!(
            match_uri("notes://{name}", "notes://a"),
            Some(vec!["a".into()])
        );
        assert_eq!(match_uri("notes://{name}", "notes://"), None);
        assert_eq!(match_uri("notes://{name}", "notes://a/b"), None);
        assert_eq!(
            match_uri("file:///logs/{name}.log", "file:///logs/app.log"),
            Some(vec!["app".into()])
        );
        assert_eq!(
            match_uri("db://{table}/{id}", "db://users/7"),
            Some(vec!["users".into(), "7".into()])
        );
        assert_eq!(match_uri("plain://x", "plain://x"), Some(vec![]));
        assert_eq!(match_uri("plain://x", "plain://y"), None);
        assert_eq!(
            match_uri("a://{x}.{y}", "a://1.2.3"),
            Some(vec!["1.2".into(), "3".into()])
        );
    }

    #[test]
    fn reserved_variables_take_slashes() {
        assert_eq!(
            match_uri("file:///{+path}", "file:///a/b/c"),
            Some(vec!["a/b/c".into()])
        );
    }

    #[test]
    fn malformed_templates_match_nothing() {
        for t in ["a://{x", "a://x}", "a://{}", "a://{x y}", "a://{?x}"] {
            assert!(!matches(t, "a://x"), "{t}");
        }
    }

    #[test]
    fn hostile_uris_cost_linear_time() {
        let uri = format!("kitchen://echo/{}", "a".repeat(100_000));
        let started = std::time::Instant::now();
        assert!(!matches("kitchen://echo/{text}/", &uri));
        assert!(!matches("x://{a}{b}{c}{d}{e}!", &"y".repeat(60_000)));
        assert!(!matches(
            "x://{a}a{b}a{c}a{d}a{e}!",
            &format!("x://{}", "a".repeat(60_000))
        ));
        // Generous: a backtracking matcher takes seconds to minutes here.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(!matches(
            "x://{a}",
            &format!("x://{}", "a".repeat(MAX_URI_LEN))
        ));
    }

    #[test]
    fn overlaps() {
        assert!(overlap("a://x/{id}", "a://{host}/y"));
        assert!(overlap("a://{id}", "a://7"));
        assert!(overlap("a://{x}{y}", "a://{z}"));
        assert!(!overlap("a://{id}", "a://x/y"));
        assert!(!overlap("a://x/{id}", "b://x/{id}"));
        assert!(!overlap("a://{x}.txt", "a://{y}.log"));
        assert!(overlap("a://{+p}", "a://x/y"));
        assert!(!overlap("a://{id}", "a://"));
        // A variable takes whole characters: three of them need three.
        assert!(!overlap("a://{x}{y}{z}", "a://a€"));
        assert!(overlap("a://{x}{y}", "a://a€"));
    }

    #[test]
    fn values_are_whole_characters() {
        // Found by the host's property tests: the split fell inside `€`.
        assert_eq!(
            match_uri("a://{x}{y}", "a://.€"),
            Some(vec![".".into(), "€".into()])
        );
        assert_eq!(match_uri("a://{x}{y}", "a://€"), None);
        assert_eq!(
            match_uri("a://{x}{y}", "a://€é"),
            Some(vec!["€".into(), "é".into()])
        );
    }
}
