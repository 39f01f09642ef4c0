//! What a deployment is called and how its bundle is identified, shared by the gateway (which
//! keeps deployments) and `feelings deploy` (which makes them), so both check the same rules.

use crate::bundle::sha256_hex;

/// The longest deployment name.
pub const MAX_NAME_LEN: usize = 63;

/// Checks a deployment name: 1 to 63 characters of `a-z`, `0-9` and `-`, starting with a letter
/// or digit (it appears in URLs, `/d/NAME/`, and in file names).
pub fn validate_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars || !first_ok {
        return Err(format!(
            "{name:?} is not a deployment name: use 1 to {MAX_NAME_LEN} characters of a-z, 0-9 and -, starting with a letter or digit"
        ));
    }
    Ok(())
}

/// The bundle's identity: the hex sha256 of its `feelings.json` exactly as stored. The manifest
/// holds the sha256 of the model and the tokenizer, so this digest covers the whole bundle.
pub fn bundle_digest(manifest_json: &[u8]) -> String {
    sha256_hex(manifest_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_url_and_file_safe() {
        for good in ["imdb-minilm", "a", "0-9", &"x".repeat(MAX_NAME_LEN)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-lead",
            "Upper",
            "a_b",
            "a/b",
            "..",
            "a b",
            &"x".repeat(64),
        ] {
            let error = validate_name(bad).unwrap_err();
            assert!(error.contains("not a deployment name"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_digest_is_the_manifest_files_sha256() {
        assert_eq!(
            bundle_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
