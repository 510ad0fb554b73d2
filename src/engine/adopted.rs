//! Containers whose image a later build stands for. The watcher's fast path
//! makes a container from the previous image with the changed files placed
//! in it, while the real build runs behind; once that build is done and
//! holds the same files, the container is recorded here with the
//! configuration hash it would have had from that image, so the next `up`
//! (which builds the same image from the cache) keeps it instead of
//! recreating it. Labels cannot change after creation, so the record is a
//! file in the project's state directory: `adopted.json`, container id →
//! hash and image. A record of a container that no longer exists is
//! dropped at the next write; a missing or unreadable file records nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a fast-path container stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    /// The configuration hash it has from `image`.
    pub hash: String,
    /// The real build it holds the files of.
    pub image: String,
    /// The real build is still running behind the watcher's fast swap
    /// (`hash` and `image` are empty): `up` waits for it while the watcher runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// The record file of a project, below its state directory.
pub fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("adopted.json")
}

/// The records of `file` (none when it is missing or unreadable).
pub fn read(file: &Path) -> BTreeMap<String, Adoption> {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Adds `records` to `file`, keeping only containers in `alive`; written
/// to a temporary file and renamed, so a reader never sees half of it.
pub fn record(
    file: &Path,
    records: BTreeMap<String, Adoption>,
    alive: &[String],
) -> std::io::Result<()> {
    let mut all = read(file);
    all.extend(records);
    all.retain(|id, _| alive.contains(id));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&all)?)?;
    std::fs::rename(tmp, file)
}

/// Drops the records of containers `ids` (a build behind that failed or
/// was abandoned).
pub fn remove(file: &Path, ids: &[String]) -> std::io::Result<()> {
    let mut all = read(file);
    let before = all.len();
    all.retain(|id, _| !ids.contains(id));
    if all.len() == before {
        return Ok(());
    }
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&all)?)?;
    std::fs::rename(tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_gone_containers_are_dropped_and_a_bad_file_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path());
        assert!(read(&f).is_empty());
        let one = |h: &str| Adoption {
            hash: h.into(),
            image: "sha256:r".into(),
            pending: false,
        };
        record(&f, [("a".to_string(), one("h1"))].into(), &["a".into()]).unwrap();
        record(&f, [("b".to_string(), one("h2"))].into(), &["b".into()]).unwrap();
        assert_eq!(read(&f), [("b".to_string(), one("h2"))].into());
        remove(&f, &["b".into()]).unwrap();
        assert!(read(&f).is_empty());
        std::fs::write(&f, "{not json").unwrap();
        assert!(read(&f).is_empty());
    }
}
