#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The code cache against someone who can write its folder: every entry that is not exactly
//! what this host stored, under its key, for this content hash and engine, is rejected and
//! never loaded; and nothing read from the folder makes it panic.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use warden_codecache::{
    CodeCache, ContentHash, Key, Lookup, MAX_ENTRY_BYTES, Reason, WASMTIME_VERSION, fingerprint,
};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

/// A component exporting `answer: func() -> u32` returning `n`.
fn wasm(n: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
            (core module $m (func (export "f") (result i32) i32.const {n}))
            (core instance $i (instantiate $m))
            (func (export "answer") (result u32) (canon lift (core func $i "f"))))"#
    ))
    .unwrap()
}

fn hash(bytes: &[u8]) -> ContentHash {
    Sha256::digest(bytes).into()
}

fn engine() -> Engine {
    Engine::new(&Config::new()).unwrap()
}

fn answer(engine: &Engine, component: &Component) -> u32 {
    let mut store = Store::new(engine, ());
    let instance = Linker::new(engine)
        .instantiate(&mut store, component)
        .unwrap();
    let f = instance
        .get_typed_func::<(), (u32,)>(&mut store, "answer")
        .unwrap();
    f.call(&mut store, ()).unwrap().0
}

struct Fixture {
    _t: tempfile::TempDir,
    dir: PathBuf,
    key: [u8; 32],
    engine: Engine,
}

impl Fixture {
    fn new() -> Fixture {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cache");
        let key = *Key::random().bytes();
        Fixture {
            _t: t,
            dir,
            key,
            engine: engine(),
        }
    }

    fn cache(&self) -> CodeCache {
        CodeCache::open(&self.dir, key_of(&self.key, self.dir.parent().unwrap())).unwrap()
    }

    /// Compiles `wasm(n)` and stores it; returns its content hash and entry path.
    fn stored(&self, n: u32) -> (ContentHash, PathBuf) {
        let bytes = wasm(n);
        let h = hash(&bytes);
        let code = self.engine.precompile_component(&bytes).unwrap();
        let path = self
            .cache()
            .store(&self.engine, &h, &code)
            .unwrap()
            .unwrap();
        (h, path)
    }
}

/// A `Key` with these bytes (written as a 0600 key file and read back).
fn key_of(bytes: &[u8; 32], dir: &Path) -> Key {
    let p = dir.join(format!("k-{}", hex(bytes)));
    if !p.exists() {
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    Key::load(&p).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rejected(l: Lookup) -> Reason {
    match l {
        Lookup::Rejected(r) => r.reason,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_stored_component_is_loaded_back_and_runs() {
    let f = Fixture::new();
    let (h, path) = f.stored(42);
    assert_eq!(mode(&f.dir), 0o700);
    assert_eq!(mode(&path), 0o600);
    // Named by content hash and engine fingerprint; no temporary file left behind.
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        name,
        format!("{}-{}", hex(&h), hex(&fingerprint(&f.engine)))
    );
    assert_eq!(fs::read_dir(&f.dir).unwrap().count(), 1);
    assert_eq!(f.cache().entry_path(&f.engine, &h), Some(path));
    // A new cache on the same folder and key (a restart), and a new engine of the same
    // settings: a hit.
    let again = engine();
    match f.cache().load(&again, &h) {
        Lookup::Hit(c) => assert_eq!(answer(&again, &c), 42),
        other => panic!("expected a hit, got {other:?}"),
    }
    // Another content hash: a miss.
    assert!(matches!(
        f.cache().load(&f.engine, &hash(b"x")),
        Lookup::Miss
    ));
}

#[test]
fn a_flipped_byte_anywhere_is_rejected() {
    let f = Fixture::new();
    let (h, path) = f.stored(7);
    let good = fs::read(&path).unwrap();
    // The magic number, the MAC, the start, middle and end of the code.
    for at in [0, 8, 39, 40, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        let reason = rejected(f.cache().load(&f.engine, &h));
        if at < 8 {
            assert!(matches!(reason, Reason::Format(_)), "byte {at}: {reason}");
        } else {
            assert!(reason.is_tampering(), "byte {at}: {reason}");
        }
    }
}

#[test]
fn an_entry_copied_under_another_content_hash_is_rejected() {
    let f = Fixture::new();
    let (_, one) = f.stored(1);
    let (two_hash, two) = f.stored(2);
    // Both are genuine entries of this host, under this key and engine: the MAC binds each
    // to its own content hash.
    fs::copy(&one, &two).unwrap();
    assert!(rejected(f.cache().load(&f.engine, &two_hash)).is_tampering());
}

#[test]
fn an_entry_under_another_key_is_rejected() {
    let f = Fixture::new();
    let (h, _) = f.stored(3);
    let other = CodeCache::open(&f.dir, Key::random()).unwrap();
    assert!(rejected(other.load(&f.engine, &h)).is_tampering());
    // The genuine key still loads it.
    assert!(matches!(f.cache().load(&f.engine, &h), Lookup::Hit(_)));
}

#[test]
fn an_entry_of_another_engine_is_never_loaded() {
    let f = Fixture::new();
    let (h, path) = f.stored(4);
    let mut config = Config::new();
    config.consume_fuel(true);
    let fuel = Engine::new(&config).unwrap();
    assert_ne!(fingerprint(&fuel), fingerprint(&f.engine));
    // Another fingerprint, another name: a miss.
    assert!(matches!(f.cache().load(&fuel, &h), Lookup::Miss));
    // Copied to the other engine's name, the MAC (over the fingerprint) does not match.
    let theirs = f.cache().entry_path(&fuel, &h).unwrap();
    fs::copy(&path, &theirs).unwrap();
    assert!(rejected(f.cache().load(&fuel, &h)).is_tampering());
}

#[test]
fn the_fingerprint_is_stable_for_equal_settings() {
    assert_eq!(fingerprint(&engine()), fingerprint(&engine()));
}

#[test]
fn truncated_empty_and_oversized_entries_are_refused_without_panicking() {
    let f = Fixture::new();
    let (h, path) = f.stored(5);
    let good = fs::read(&path).unwrap();
    for len in [0, 1, 8, 39, 40, 41, good.len() - 1] {
        fs::write(&path, &good[..len]).unwrap();
        let reason = rejected(f.cache().load(&f.engine, &h));
        assert!(
            matches!(reason, Reason::Format(_) | Reason::Mac),
            "{len} bytes: {reason}"
        );
    }
    // Over the cap: refused from its size, without reading it (a sparse file).
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(MAX_ENTRY_BYTES + 1).unwrap();
    let reason = rejected(f.cache().load(&f.engine, &h));
    assert!(
        matches!(reason, Reason::TooLarge(n) if n == MAX_ENTRY_BYTES + 1),
        "{reason}"
    );
    // A store over a rejected entry replaces it.
    let code = f.engine.precompile_component(&wasm(5)).unwrap();
    f.cache().store(&f.engine, &h, &code).unwrap();
    assert!(matches!(f.cache().load(&f.engine, &h), Lookup::Hit(_)));
}

#[test]
fn links_folders_and_shared_files_are_refused() {
    let f = Fixture::new();
    let (h, path) = f.stored(6);
    let real = f.dir.join("real");
    fs::rename(&path, &real).unwrap();
    std::os::unix::fs::symlink(&real, &path).unwrap();
    assert!(matches!(
        rejected(f.cache().load(&f.engine, &h)),
        Reason::NotPrivate(_)
    ));
    fs::remove_file(&path).unwrap();
    fs::rename(&real, &path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        rejected(f.cache().load(&f.engine, &h)),
        Reason::NotPrivate(_)
    ));
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    assert!(matches!(
        rejected(f.cache().load(&f.engine, &h)),
        Reason::NotPrivate(_)
    ));
}

#[test]
fn a_shared_folder_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cache");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let e = CodeCache::open(&dir, Key::random())
        .unwrap_err()
        .to_string();
    assert!(e.contains("writable by other users"), "{e}");
}

#[test]
fn admitted_code_is_stored_and_loaded_from_memory() {
    let f = Fixture::new();
    let bytes = wasm(9);
    let h = hash(&bytes);
    let code = f.engine.precompile_component(&bytes).unwrap();
    let admitted = f.cache().admit(&f.engine, &h, code);
    let path = admitted.stored.unwrap().unwrap();
    assert_eq!(answer(&f.engine, &admitted.component.unwrap()), 9);
    assert!(matches!(f.cache().load(&f.engine, &h), Lookup::Hit(_)));
    assert_eq!(mode(&path), 0o600);
    // Bytes that are not compiled code are sealed, but Wasmtime refuses them: an error,
    // never a panic.
    let junk = f
        .cache()
        .admit(&f.engine, &hash(b"junk"), b"not code".to_vec());
    assert!(matches!(junk.component, Err(Reason::Wasmtime(_))));
    // ... and not stored.
    assert!(matches!(junk.stored, Ok(None)));
    assert!(matches!(
        f.cache().load(&f.engine, &hash(b"junk")),
        Lookup::Miss
    ));
    // In memory: nothing stored, nothing found, code still loads.
    let memory = CodeCache::in_memory();
    let code = f.engine.precompile_component(&bytes).unwrap();
    let admitted = memory.admit(&f.engine, &h, code);
    assert!(matches!(admitted.stored, Ok(None)));
    assert_eq!(answer(&f.engine, &admitted.component.unwrap()), 9);
    assert!(matches!(memory.load(&f.engine, &h), Lookup::Miss));
}

#[test]
fn the_wasmtime_version_is_the_locked_one() {
    let lock =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
    let locked = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .unwrap()
        .trim_matches('"');
    assert_eq!(locked, WASMTIME_VERSION);
}
