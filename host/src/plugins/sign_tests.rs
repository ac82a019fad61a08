use super::*;

#[test]
fn sign_and_verify_round_trip() {
    let (secret, public) = generate();
    let digest = "ab".repeat(32);
    let sig = sign(&secret, &digest).unwrap();
    assert_eq!(
        verify(std::slice::from_ref(&public), &sig, &digest).unwrap(),
        public
    );
    // Another file, another key, garbage: all refused.
    assert!(verify(std::slice::from_ref(&public), &sig, &"cd".repeat(32)).is_err());
    let (_, other) = generate();
    assert!(verify(&[other], &sig, &digest).is_err());
    assert!(
        verify(&[public], "not base64!", &digest)
            .unwrap_err()
            .contains("base64")
    );
}

#[test]
fn policy_requires_a_sig_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.wasm");
    std::fs::write(&file, b"x").unwrap();
    let (secret, public) = generate();
    let settings = SignatureSettings {
        require: true,
        trusted_keys: vec![public],
    };
    let digest = "00".repeat(32);
    assert!(
        check(&settings, &file, &digest)
            .unwrap_err()
            .contains("no signature file")
    );
    std::fs::write(sig_path(&file), sign(&secret, &digest).unwrap()).unwrap();
    check(&settings, &file, &digest).unwrap();
    assert!(check(&SignatureSettings::default(), &file, "whatever").is_ok());
    assert_eq!(
        SignatureSettings {
            require: true,
            trusted_keys: vec![]
        }
        .problems()
        .len(),
        1
    );
    assert_eq!(
        SignatureSettings {
            require: false,
            trusted_keys: vec!["rsa:x".into()]
        }
        .problems()
        .len(),
        1
    );
}
