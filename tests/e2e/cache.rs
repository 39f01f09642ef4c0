//! The cache of compiled snapshots: private, checked before it is loaded, rebuilt when damaged.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use feelings_core::Bundle;
use feelings_runtime::{SandboxOptions, Sandboxes};

use crate::tiny_bundle;

/// The small test guest: it compiles in a moment, unlike the classifier.
fn fault_guest() -> Vec<u8> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    std::fs::read(target.join("wasm32-wasip2/release/feelings_fault_guest.wasm")).unwrap()
}

fn prepare(cache: &Path) -> Result<feelings_runtime::Preparation, String> {
    prepare_bundle(cache, tiny_bundle())
}

fn prepare_bundle(cache: &Path, dir: &Path) -> Result<feelings_runtime::Preparation, String> {
    let bundle = Bundle::read_dir(dir).unwrap();
    let options = SandboxOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..SandboxOptions::default()
    };
    let (sandboxes, prepared) = Sandboxes::new(crate::engine(), &fault_guest(), &bundle, &options)
        .map_err(|e| e.to_string())?;
    let (mut sandbox, _) = sandboxes.instance().unwrap();
    assert_eq!(sandbox.classify(&["fine".into()]).unwrap()[0].score, 0.25);
    Ok(prepared)
}

#[test]
fn a_new_cache_folder_is_private_and_a_second_start_reads_it() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("deep/cache");
    let made = prepare(&cache).unwrap();
    assert!(!made.from_cache);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o700, "{:o}", mode(&cache));
    let file = made.cache_file.unwrap();
    assert_eq!(mode(&file), 0o600, "whatever the umask: {:o}", mode(&file));
    assert!(prepare(&cache).unwrap().from_cache);
}

/// The cache's files whose names start with `prefix`, with when each was last written.
fn cached_files(cache: &Path, prefix: &str) -> Vec<(String, std::time::SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|entry| entry.unwrap())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix) && name.ends_with(".cwasm"))
        .map(|name| {
            let written = std::fs::metadata(cache.join(&name)).unwrap().modified();
            (name, written.unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_instrumented_component_is_compiled_once_for_every_bundle() {
    let cache = tempfile::tempdir().unwrap();
    assert!(!prepare(cache.path()).unwrap().from_cache);
    let instrumented = cached_files(cache.path(), "instrumented-");
    assert_eq!(instrumented.len(), 1, "{instrumented:?}");

    // Another bundle (the same files under another model name): its own snapshot, made with
    // the instrumented component already compiled.
    let other = tempfile::tempdir().unwrap();
    for file in ["model.onnx", "tokenizer.json"] {
        std::fs::copy(tiny_bundle().join(file), other.path().join(file)).unwrap();
    }
    let manifest = std::fs::read_to_string(tiny_bundle().join("feelings.json")).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    manifest["name"] = "another-model".into();
    std::fs::write(other.path().join("feelings.json"), manifest.to_string()).unwrap();
    assert!(
        !prepare_bundle(cache.path(), other.path())
            .unwrap()
            .from_cache
    );
    assert_eq!(cached_files(cache.path(), "instrumented-"), instrumented);
    let snapshots: Vec<_> = cached_files(cache.path(), "")
        .into_iter()
        .filter(|(name, _)| !name.starts_with("instrumented-"))
        .collect();
    assert_eq!(snapshots.len(), 2, "one snapshot per bundle: {snapshots:?}");
}

#[test]
fn a_damaged_or_foreign_cache_file_is_made_again_not_loaded() {
    let cache = tempfile::tempdir().unwrap();
    let file = prepare(cache.path()).unwrap().cache_file.unwrap();
    let whole = std::fs::read(&file).unwrap();

    // Truncated, then one flipped byte: both refused by the checksum and made again.
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let again = prepare(cache.path()).unwrap();
    assert!(!again.from_cache, "a truncated file is not loaded");
    let mut flipped = std::fs::read(&file).unwrap();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&file, &flipped).unwrap();
    assert!(
        !prepare(cache.path()).unwrap().from_cache,
        "a damaged file is not loaded"
    );
    assert_eq!(std::fs::read(&file).unwrap(), whole, "made again, whole");
    assert!(prepare(cache.path()).unwrap().from_cache);

    // A file another user owns (the tests run as root in CI, which may give it away).
    std::os::unix::fs::chown(&file, Some(65534), Some(65534))
        .expect("the cache tests need to run as root to plant a file of another user");
    assert!(
        !prepare(cache.path()).unwrap().from_cache,
        "a foreign file is not loaded"
    );
    assert!(prepare(cache.path()).unwrap().from_cache);
}

#[test]
fn a_cache_folder_others_may_write_or_own_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let open = root.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = prepare(&open).unwrap_err();
    assert!(
        refused.contains("others may write") && refused.contains("open"),
        "{refused}"
    );

    let foreign = root.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534))
        .expect("the cache tests need to run as root to make a folder of another user");
    let refused = prepare(&foreign).unwrap_err();
    assert!(refused.contains("belongs to user 65534"), "{refused}");
}
