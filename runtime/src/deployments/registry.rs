//! The registry folder: every deployment's record and the bundles they serve, written so that a
//! crash at any moment leaves either the old state or the new one (a temporary file or folder,
//! then a rename), and read back at start.
//!
//! ```text
//! REGISTRY/deployments/NAME.json          one record per deployment
//! REGISTRY/bundles/SHA256/feelings.json   the bundles, by the sha256 of their feelings.json
//! REGISTRY/bundles/SHA256/model.onnx      (shared by deployments of the same bundle)
//! REGISTRY/bundles/SHA256/tokenizer.json
//! REGISTRY/tmp/                           work in progress, emptied at start
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use feelings_core::deployment::{bundle_digest, validate_name};
use feelings_core::manifest::{MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use feelings_core::{Bundle, BundleError, Manifest};
use serde::{Deserialize, Serialize};

/// One deployment as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The deployment's name (`a-z`, `0-9`, `-`).
    pub name: String,
    /// The bundle it serves: the sha256 of the bundle's `feelings.json`.
    pub bundle_sha256: String,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
    /// Whether it answers requests.
    pub enabled: bool,
    /// What one full-length review costs a sandbox, in milliseconds: measured when it was made
    /// (and at every start for a bundle given at start), and again when it warms up if the
    /// limits could not take the recorded figure.
    pub review_ms: Option<f64>,
    /// Its own number of sandbox slots (the gateway's `--instances` when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u16>,
    /// Its own queue limit, in reviews (the gateway's `--queue` when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
    /// sha256 (hex) of the key its classify route requires, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_sha256: Option<String>,
}

/// What can go wrong with the registry folder.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file or folder of the registry cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A record file is not a record.
    #[error("{path}: not a deployment record: {reason} (fix or remove the file)")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The uploaded bundle is not a valid bundle.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle's sha256 is not the one the uploader said.
    #[error("the bundle's sha256 is {actual} (of its feelings.json), the upload said {expected}: the upload was damaged or is not the bundle meant")]
    Digest {
        /// What the uploader said.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
}

/// The record in file `path`, checked: a valid name, the one its file is named after.
fn read_record(path: &Path) -> Result<Record, RegistryError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let bad = |reason: String| RegistryError::BadRecord {
        path: path.to_path_buf(),
        reason,
    };
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    validate_name(&record.name).map_err(bad)?;
    if path.file_stem().is_none_or(|s| s != record.name.as_str()) {
        return Err(bad(format!("it names {:?}", record.name)));
    }
    Ok(record)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The bytes of a bundle's three files, as uploaded or read from a folder.
pub struct BundleFiles {
    /// `feelings.json`, exactly as it will be stored.
    pub manifest: Vec<u8>,
    /// `model.onnx`.
    pub model: Vec<u8>,
    /// `tokenizer.json`.
    pub tokenizer: Vec<u8>,
}

impl BundleFiles {
    /// Reads a bundle folder's files.
    pub fn read_dir(dir: &Path) -> Result<Self, RegistryError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(io(&path))
        };
        Ok(Self {
            manifest: read(MANIFEST_FILE)?,
            model: read(MODEL_FILE)?,
            tokenizer: read(TOKENIZER_FILE)?,
        })
    }

    /// The bundle's sha256: that of its `feelings.json`.
    pub fn digest(&self) -> String {
        bundle_digest(&self.manifest)
    }
}

/// The registry folder.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// Opens (creating if needed) the registry in `dir`, and clears work a crash left behind.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        let registry = Self {
            dir: dir.to_path_buf(),
        };
        for sub in ["deployments", "bundles", "tmp"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io(&path))?;
        }
        let tmp = dir.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io(&path))?;
        }
        Ok(registry)
    }

    /// The bundle folder of deployment `name` in the registry at `dir`, read without opening
    /// the registry (a running gateway may be writing to it).
    pub fn deployment_bundle(dir: &Path, name: &str) -> Result<PathBuf, RegistryError> {
        validate_name(name).map_err(|reason| RegistryError::BadRecord {
            path: dir.join("deployments"),
            reason,
        })?;
        let record = read_record(&dir.join("deployments").join(format!("{name}.json")))?;
        Ok(dir.join("bundles").join(record.bundle_sha256))
    }

    /// The registry's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every record, by name.
    pub fn records(&self) -> Result<Vec<Record>, RegistryError> {
        let dir = self.dir.join("deployments");
        let mut records = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            records.push(read_record(&path)?);
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// The manifest of stored bundle `digest`, parsed, and its bytes.
    pub fn read_manifest(&self, digest: &str) -> Result<(Manifest, Vec<u8>), RegistryError> {
        let path = self.bundle_dir(digest).join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let manifest = serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadRecord {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok((manifest, bytes))
    }

    /// The folder of the bundle with this sha256.
    pub fn bundle_dir(&self, digest: &str) -> PathBuf {
        self.dir.join("bundles").join(digest)
    }

    /// Checks the bundle (its checksums; and `expected`, the sha256 the uploader gave, when
    /// given) and stores it, unless a bundle with its sha256 is already there; returns it.
    pub fn store_bundle(
        &self,
        files: BundleFiles,
        expected: Option<&str>,
    ) -> Result<(Bundle, String), RegistryError> {
        let digest = files.digest();
        if let Some(expected) = expected {
            if !expected.eq_ignore_ascii_case(&digest) {
                return Err(RegistryError::Digest {
                    expected: expected.to_string(),
                    actual: digest,
                });
            }
        }
        let manifest = files.manifest.clone();
        let bundle = Bundle::from_bytes(&files.manifest, files.model, files.tokenizer)?;
        let target = self.bundle_dir(&digest);
        if target.join(MANIFEST_FILE).is_file() {
            return Ok((bundle, digest));
        }
        let work = self.scratch(&digest);
        std::fs::create_dir_all(&work).map_err(io(&work))?;
        for (file, bytes) in [
            (MODEL_FILE, &bundle.model),
            (TOKENIZER_FILE, &bundle.tokenizer),
            (MANIFEST_FILE, &manifest),
        ] {
            write_synced(&work.join(file), bytes)?;
        }
        match std::fs::rename(&work, &target) {
            Ok(()) => {}
            // Another upload of the same bundle got there first.
            Err(_) if target.join(MANIFEST_FILE).is_file() => {
                let _ = std::fs::remove_dir_all(&work);
            }
            Err(e) => return Err(io(&target)(e)),
        }
        Ok((bundle, digest))
    }

    /// Writes `record`, replacing the one of that name if any.
    pub fn write_record(&self, record: &Record) -> Result<(), RegistryError> {
        let path = self.record_file(&record.name);
        let work = self.scratch(&record.name);
        let mut json = serde_json::to_vec_pretty(record).expect("a record serialises");
        json.push(b'\n');
        write_synced(&work, &json)?;
        std::fs::rename(&work, &path).map_err(io(&path))
    }

    /// Removes the record of `name`.
    pub fn remove_record(&self, name: &str) -> Result<(), RegistryError> {
        let path = self.record_file(name);
        std::fs::remove_file(&path).map_err(io(&path))
    }

    /// Removes the bundle `digest` (once no record uses it).
    pub fn remove_bundle(&self, digest: &str) -> Result<(), RegistryError> {
        let path = self.bundle_dir(digest);
        let work = self.scratch(digest);
        // Out of sight first, so a crash never leaves half a bundle under bundles/.
        std::fs::rename(&path, &work).map_err(io(&path))?;
        std::fs::remove_dir_all(&work).map_err(io(&work))
    }

    fn record_file(&self, name: &str) -> PathBuf {
        self.dir.join("deployments").join(format!("{name}.json"))
    }

    /// A fresh path under `tmp/`.
    fn scratch(&self, what: &str) -> PathBuf {
        static WORK: AtomicU64 = AtomicU64::new(0);
        let n = WORK.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join("tmp")
            .join(format!("{what}.{}-{n}", std::process::id()))
    }
}

/// Writes a new file and flushes it to disk before it is renamed into place.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let mut file = std::fs::File::create(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}
