use super::*;

#[test]
fn non_public_addresses_are_refused() {
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
        "::ffff:10.0.0.1",
        "224.0.0.1",
    ] {
        assert!(!is_public(ip.parse().unwrap()), "{ip}");
    }
    for ip in [
        "93.184.216.34",
        "2606:2800:220:1:248:1893:25c8:1946",
        "1.1.1.1",
    ] {
        assert!(is_public(ip.parse().unwrap()), "{ip}");
    }
}

#[test]
fn metadata_urls_need_https_and_a_path() {
    assert!(check_url("https://app.example.com/client.json").is_ok());
    assert!(check_url("http://app.example.com/client.json").is_err());
    assert!(check_url("https://app.example.com/").is_err());
    assert!(check_url("https://u:p@app.example.com/c").is_err());
    assert!(check_url("https://app.example.com/c#f").is_err());
}

#[test]
fn document_must_name_itself() {
    let url = "https://app.example.com/client.json";
    let good = serde_json::json!({
        "client_id": url, "client_name": "App", "redirect_uris": ["http://127.0.0.1:5000/cb"],
    });
    let c = parse_document(url, good.to_string().as_bytes()).unwrap();
    assert_eq!(c.client_name.as_deref(), Some("App"));
    assert_eq!(c.redirect_uris, vec!["http://127.0.0.1:5000/cb"]);

    let other = serde_json::json!({"client_id": "https://evil.example/c.json", "redirect_uris": ["https://evil.example/cb"]});
    assert!(parse_document(url, other.to_string().as_bytes()).is_err());
    let bad_uri =
        serde_json::json!({"client_id": url, "redirect_uris": ["http://evil.example/cb"]});
    assert!(parse_document(url, bad_uri.to_string().as_bytes()).is_err());
    let secret = serde_json::json!({"client_id": url, "redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_post"});
    assert!(parse_document(url, secret.to_string().as_bytes()).is_err());
    assert!(parse_document(url, b"not json").is_err());
}

#[tokio::test]
async fn fetcher_refuses_loopback_targets() {
    let f = Fetcher::new(false);
    let err = f.get("https://127.0.0.1:9/client.json").await.unwrap_err();
    assert!(err.contains("non-public"), "{err}");
    let err = f.get("https://localhost:9/client.json").await.unwrap_err();
    assert!(err.contains("non-public"), "{err}");
}

#[test]
fn the_cache_is_bounded_and_evicts_the_oldest() {
    let f = Fetcher::with_capacity(false, 2);
    let client = |n: u32| MetadataClient {
        client_id: format!("https://app{n}.example.com/c.json"),
        client_name: None,
        redirect_uris: vec!["https://a.example/cb".into()],
    };
    for n in 0..10 {
        f.remember(&client(n));
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(f.cached(), 2);
    let cache = f.cache.lock().unwrap();
    assert!(cache.contains_key(&client(9).client_id));
    assert!(cache.contains_key(&client(8).client_id));
}
