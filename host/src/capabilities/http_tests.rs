use super::*;

#[test]
fn host_patterns() {
    let p = HostPattern::parse("api.example.com").unwrap();
    assert!(p.matches("api.example.com", 443));
    assert!(p.matches("API.example.com", 80));
    assert!(!p.matches("api.example.com", 8080));
    assert!(!p.matches("evil-api.example.com", 443));

    let w = HostPattern::parse("*.example.com").unwrap();
    assert!(w.matches("a.example.com", 443));
    assert!(w.matches("a.b.example.com", 443));
    assert!(
        !w.matches("example.com", 443),
        "wildcard covers subdomains only"
    );
    assert!(!w.matches("badexample.com", 443));

    let l = HostPattern::parse("localhost:8080").unwrap();
    assert!(l.matches("localhost", 8080));
    assert!(!l.matches("localhost", 80));

    assert!(HostPattern::parse("[::1]:80").unwrap().matches("[::1]", 80));
    assert!(HostPattern::parse("https://x.com").is_err());
    assert!(HostPattern::parse("a.*.com").is_err());
    assert!(HostPattern::parse("x.com:notaport").is_err());
}

#[test]
fn private_addresses() {
    for ip in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "::1",
        "fc00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
    ] {
        assert!(is_non_public(ip.parse().unwrap()), "{ip} is non-public");
    }
    for ip in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
        assert!(!is_non_public(ip.parse().unwrap()), "{ip} is public");
    }
}

#[test]
fn no_grant_refuses_and_names_the_key() {
    let p = HttpPolicy::new("web".into(), None);
    let e = p.check("GET", "example.com", 443).unwrap_err();
    assert!(
        e.contains("plugin `web`") && e.contains("grants.http.hosts"),
        "{e}"
    );
    let g = HttpGrant {
        hosts: vec!["example.com".into()],
        methods: vec!["GET".into()],
        ..Default::default()
    };
    let p = HttpPolicy::new("web".into(), Some(&g));
    assert!(p.check("GET", "example.com", 443).is_ok());
    assert!(
        p.check("POST", "example.com", 443)
            .unwrap_err()
            .contains("POST")
    );
    assert!(
        p.check("GET", "other.com", 443)
            .unwrap_err()
            .contains("allow-list")
    );
}

#[test]
fn the_guest_cannot_raise_the_grants_timeout() {
    let limit = Duration::from_millis(2000);
    let o = clamp_timeouts(None, limit);
    assert_eq!(
        (
            o.connect_timeout,
            o.first_byte_timeout,
            o.between_bytes_timeout
        ),
        (Some(limit), Some(limit), Some(limit))
    );
    let long = Duration::from_secs(3600);
    let short = Duration::from_millis(100);
    let o = clamp_timeouts(
        Some(RequestOptions {
            connect_timeout: Some(long),
            first_byte_timeout: Some(short),
            between_bytes_timeout: Some(long),
        }),
        limit,
    );
    assert_eq!(o.connect_timeout, Some(limit));
    assert_eq!(o.first_byte_timeout, Some(short), "shorter stays");
    assert_eq!(o.between_bytes_timeout, Some(limit));
}
