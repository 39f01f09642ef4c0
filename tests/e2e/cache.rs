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
    let bundle = Bundle::read_dir(tiny_bundle()).unwrap();
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
