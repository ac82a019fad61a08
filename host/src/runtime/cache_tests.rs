use super::*;

const WAT: &str = r#"(component (core module (func (export "f"))))"#;

fn engine() -> Engine {
    Engine::new(&wasmtime::Config::new()).unwrap()
}

fn digest(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

#[test]
fn second_load_is_a_verified_hit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let cache = CodeCache::open(dir.path(), &engine).unwrap();
    let d = digest(WAT.as_bytes());
    let (_, src) = cache
        .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    assert_eq!(src, Source::Compiled);
    assert!(cache.entry_path(&d).is_file());
    let (_, src) = cache
        .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    assert_eq!(src, Source::Cache);
    // A new cache on the same directory (a restart) finds it too.
    let again = CodeCache::open(dir.path(), &engine).unwrap();
    assert_eq!(again.engine_hash(), cache.engine_hash());
    let (_, src) = again
        .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    assert_eq!(src, Source::Cache);
}

#[cfg(unix)]
#[test]
fn key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    CodeCache::open(dir.path(), &engine()).unwrap();
    let mode = std::fs::metadata(dir.path().join("key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read(dir.path().join("key")).unwrap().len(), 32);
}

#[test]
fn corrupt_or_truncated_entries_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let cache = CodeCache::open(dir.path(), &engine).unwrap();
    let d = digest(WAT.as_bytes());
    cache
        .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    let path = cache.entry_path(&d);
    let good = std::fs::read(&path).unwrap();

    // One flipped bit in the artifact.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let (_, src) = cache
        .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    assert_eq!(src, Source::Compiled, "a corrupt entry is not used");
    let rebuilt = std::fs::read(&path).unwrap();
    assert_ne!(rebuilt, bad, "the entry was rewritten");
    let (_, src) = cache
        .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    assert_eq!(src, Source::Cache, "the rebuilt entry is used");

    // Truncated at every interesting length.
    for len in [0, 5, MAGIC.len(), MAGIC.len() + 10, good.len() / 2] {
        std::fs::write(&path, &good[..len]).unwrap();
        let (_, src) = cache
            .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
            .unwrap();
        assert_eq!(src, Source::Compiled, "truncated to {len} bytes");
    }
    // Garbage with a valid-looking header.
    let mut junk = MAGIC.to_vec();
    junk.extend([7u8; 200]);
    std::fs::write(&path, &junk).unwrap();
    let (_, src) = cache
        .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    assert_eq!(src, Source::Compiled);
}

#[test]
fn entries_under_another_key_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let cache = CodeCache::open(dir.path(), &engine).unwrap();
    let d = digest(WAT.as_bytes());
    cache
        .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    // A different key (someone else's host, or a replaced key file).
    std::fs::write(dir.path().join("key"), [9u8; 32]).unwrap();
    let other = CodeCache::open(dir.path(), &engine).unwrap();
    let (_, src) = other
        .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    assert_eq!(
        src,
        Source::Compiled,
        "an entry MACed under another key is refused"
    );
    let (_, src) = other
        .component(&engine, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    assert_eq!(src, Source::Cache);
}

#[test]
fn an_entry_moved_to_another_digest_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let cache = CodeCache::open(dir.path(), &engine).unwrap();
    let a = r#"(component (core module (func (export "a"))))"#;
    let b = r#"(component (core module (func (export "b"))))"#;
    let (da, db) = (digest(a.as_bytes()), digest(b.as_bytes()));
    cache
        .component(&engine, &Compiler::InProcess, &da, a.as_bytes())
        .unwrap();
    std::fs::copy(cache.entry_path(&da), cache.entry_path(&db)).unwrap();
    let (_, src) = cache
        .component(&engine, &Compiler::InProcess, &db, b.as_bytes())
        .unwrap();
    assert_eq!(src, Source::Compiled, "a's code is never served for b");
}

#[test]
fn another_engine_configuration_uses_other_entries() {
    let dir = tempfile::tempdir().unwrap();
    let plain = engine();
    let mut config = wasmtime::Config::new();
    config.consume_fuel(true);
    let fuel = Engine::new(&config).unwrap();
    let c1 = CodeCache::open(dir.path(), &plain).unwrap();
    let c2 = CodeCache::open(dir.path(), &fuel).unwrap();
    assert_ne!(c1.engine_hash(), c2.engine_hash());
    let d = digest(WAT.as_bytes());
    c1.component(&plain, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    let (_, src) = c2
        .component(&fuel, &Compiler::InProcess, &d, WAT.as_bytes())
        .unwrap();
    assert_eq!(src, Source::Compiled);
}
