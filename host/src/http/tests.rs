use super::*;

#[test]
fn host_names_are_extracted_from_authorities() {
    assert_eq!(host_name("127.0.0.1:8080"), "127.0.0.1");
    assert_eq!(host_name("[::1]:8080"), "::1");
    assert_eq!(host_name("Example.COM"), "example.com");
    assert_eq!(host_name("example.com."), "example.com");
    assert_eq!(host_name("evil.com:80"), "evil.com");
}

#[test]
fn allowed_hosts_follow_the_public_url() {
    let h = HttpConfig::hosts_for("https://mcp.example.com");
    assert!(h.contains(&"mcp.example.com".to_owned()));
    assert!(h.contains(&"127.0.0.1".to_owned()));
    assert!(!h.contains(&"evil.com".to_owned()));
    assert!(HttpConfig::hosts_for("http://[::1]:8080").contains(&"::1".to_owned()));
}
