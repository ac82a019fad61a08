use super::*;
use serde_json::json;

fn config(dir: &Path, rotate_bytes: u64) -> AuditConfig {
    AuditConfig {
        path: dir.join("audit.log"),
        rotate_bytes,
        keep: 5,
        stdout: false,
    }
}

fn denied(n: usize) -> AuditEvent {
    AuditEvent::RequestDenied {
        status: 401,
        reason: format!("no token {n}"),
        path: "/mcp".into(),
        ip: "127.0.0.1".into(),
        subject: None,
    }
}

#[tokio::test]
async fn lines_chain_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open(config(dir.path(), 1 << 20)).unwrap();
    for n in 0..5 {
        audit.record(denied(n)).await.unwrap();
    }
    let path = dir.path().join("audit.log");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 5);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "request_denied");
    assert_eq!(first["prev"], GENESIS);
    let report = verify(&[&path]).unwrap();
    assert_eq!(
        report,
        VerifyReport {
            lines: 5,
            from_genesis: true
        }
    );

    // Editing line 3 breaks the chain at line 4.
    let tampered = text.replacen("no token 2", "no token X", 1);
    std::fs::write(&path, tampered).unwrap();
    match verify(&[&path]) {
        Err(VerifyError::Broken { line, .. }) => assert_eq!(line, 4),
        other => panic!("expected a break, got {other:?}"),
    }
}

#[tokio::test]
async fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let audit = Audit::open(config(dir.path(), 1 << 20)).unwrap();
        audit.record(denied(1)).await.unwrap();
    }
    let audit = Audit::open(config(dir.path(), 1 << 20)).unwrap();
    audit.record(denied(2)).await.unwrap();
    let path = dir.path().join("audit.log");
    assert_eq!(verify(&[&path]).unwrap().lines, 2);
}

#[tokio::test]
async fn rotation_keeps_the_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open(config(dir.path(), 600)).unwrap();
    for n in 0..20 {
        audit.record(denied(n)).await.unwrap();
    }
    let base = dir.path().join("audit.log");
    let mut files: Vec<PathBuf> = (1..=5)
        .rev()
        .map(|n| rotated_name(&base, n))
        .filter(|p| p.exists())
        .collect();
    assert!(files.len() >= 2, "rotated at 600 bytes: {files:?}");
    files.push(base.clone());
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let report = verify(&refs).unwrap();
    assert!(report.lines >= 5);
    // The current file alone verifies too, as a continuation.
    assert!(!verify(&[&base]).unwrap().from_genesis);
}

#[test]
fn secrets_are_masked_and_long_values_truncated() {
    let args = json!({
        "user": "ada",
        "password": "hunter2hunter2",
        "nested": {"api_key": "k-123", "fine": 1},
        "headers": {"Authorization": ["Bearer x"]},
        "blob": "x".repeat(5000),
    });
    let r = redact_arguments(&args, 512);
    assert_eq!(r["user"], "ada");
    assert_eq!(r["password"], redact::MASK);
    assert_eq!(r["nested"]["api_key"], redact::MASK);
    assert_eq!(r["nested"]["fine"], 1);
    assert_eq!(r["headers"]["Authorization"][0], redact::MASK);
    let s = r.to_string();
    assert!(!s.contains("hunter2") && !s.contains("k-123") && !s.contains("Bearer x"));
    assert!(s.len() < 1200, "truncated: {} bytes", s.len());
}
