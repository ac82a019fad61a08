use super::*;

// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

#[test]
fn pkce_s256_matches_rfc_example() {
    assert!(pkce_s256_matches(VERIFIER, CHALLENGE));
    assert!(is_s256_challenge(CHALLENGE));
}

#[test]
fn pkce_refuses_mismatch_plain_and_bad_verifiers() {
    let other = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl";
    assert!(!pkce_s256_matches(other, CHALLENGE));
    // "plain": the verifier itself as the challenge never matches S256.
    assert!(!pkce_s256_matches(VERIFIER, VERIFIER));
    assert!(!pkce_s256_matches("short", CHALLENGE));
    assert!(!pkce_s256_matches(&"a".repeat(129), CHALLENGE));
    assert!(!pkce_s256_matches(&format!("{VERIFIER} "), CHALLENGE));
    assert!(!is_s256_challenge("abc"));
    assert!(!is_s256_challenge(&format!("{}=", &CHALLENGE[..42])));
}

#[test]
fn redirect_uri_rules() {
    for ok in [
        "https://app.example.com/cb",
        "https://app.example.com/cb?x=1",
        "http://127.0.0.1:33418/callback",
        "http://localhost:8080/cb",
        "http://[::1]:9000/cb",
        "com.example.app:/oauth2redirect",
        "cursor://anysphere.cursor-retrieval/oauth/callback",
    ] {
        assert!(check_redirect_uri(ok).is_ok(), "{ok} should be accepted");
    }
    for bad in [
        "http://example.com/cb",
        "http://192.168.1.10/cb",
        "https://app.example.com/cb#frag",
        "https://user:pw@app.example.com/cb",
        "javascript:alert(1)",
        "data:text/html,hi",
        "file:///etc/passwd",
        "/relative",
        "",
    ] {
        assert!(check_redirect_uri(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn redirect_uri_must_match_exactly() {
    let reg = vec![
        "http://127.0.0.1:3000/callback".to_owned(),
        "https://a.example/cb".to_owned(),
    ];
    assert!(redirect_uri_matches("http://127.0.0.1:3000/callback", &reg));
    assert!(redirect_uri_matches("https://a.example/cb", &reg));
    for bad in [
        "http://127.0.0.1:3001/callback",
        "http://127.0.0.1:3000/callback/",
        "http://127.0.0.1:3000/callback?x=1",
        "http://localhost:3000/callback",
        "https://a.example/cb/../evil",
        "https://A.example/cb",
        "https://a.example.evil.com/cb",
        "https://a.example/cb#x",
    ] {
        assert!(!redirect_uri_matches(bad, &reg), "{bad} must not match");
    }
}

#[test]
fn scopes_origins_and_escaping() {
    assert_eq!(parse_scope(" mcp  admin mcp "), vec!["mcp", "admin"]);
    assert!(parse_scope("").is_empty());
    assert_eq!(
        normalize_origin("https://App.Example.com").as_deref(),
        Some("https://app.example.com:443")
    );
    assert_eq!(
        normalize_origin("http://127.0.0.1:8080/").as_deref(),
        Some("http://127.0.0.1:8080")
    );
    assert_eq!(normalize_origin("null"), None);
    assert_eq!(
        html_escape("<script>\"x\"&'y'</script>"),
        "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
    );
    assert_eq!(
        with_query(
            "http://127.0.0.1:1/cb?keep=1",
            &[("code", "a b"), ("state", "s&t")]
        ),
        "http://127.0.0.1:1/cb?keep=1&code=a+b&state=s%26t"
    );
    assert_eq!(redirect_host("https://x.example:8443/cb"), "x.example:8443");
    assert_eq!(
        csp_source("http://127.0.0.1:33418/callback?x=1").as_deref(),
        Some("http://127.0.0.1:33418")
    );
    assert_eq!(
        csp_source("https://app.example/cb").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        csp_source("http://[::1]:9/cb").as_deref(),
        Some("http://[::1]:9")
    );
    assert_eq!(
        csp_source("com.example.app:/oauth").as_deref(),
        Some("com.example.app:")
    );
    assert_eq!(csp_source("not a url"), None);
    assert!(hashes_equal("abc", "abc"));
    assert!(!hashes_equal("abc", "abd"));
    assert!(!hashes_equal("abc", "ab"));
}
