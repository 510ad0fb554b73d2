//! Where an export (or the stack file `devstack import` writes) goes:
//! stdout, one file, or a directory of files; the directory relative paths
//! are written against; the files written, none replaced unless forced.

use std::path::{Path, PathBuf};

/// Where the text goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Stdout,
    File(PathBuf),
    /// One file per unit (Kubernetes manifests only).
    Dir(PathBuf),
}

impl Place {
    /// `output` (none or `-`: stdout); a directory when `dirs` allows one
    /// and it is an existing directory or a path ending in `/`.
    pub fn of(output: Option<&Path>, dirs: bool) -> Place {
        match output {
            None => Place::Stdout,
            Some(o) if o == Path::new("-") => Place::Stdout,
            Some(o) if dirs && (o.is_dir() || o.to_string_lossy().ends_with('/')) => {
                Place::Dir(o.to_path_buf())
            }
            Some(o) => Place::File(o.to_path_buf()),
        }
    }

    /// The directory the written file sits in, canonical where it exists:
    /// relative paths in it (build contexts, seeds) are written against it
    /// (the current directory for stdout).
    pub fn base_dir(&self) -> PathBuf {
        let dir = match self {
            Place::File(o) => o
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            Place::Stdout | Place::Dir(_) => PathBuf::from("."),
        };
        std::fs::canonicalize(&dir).unwrap_or(dir)
    }
}

/// Writes each file (a directory `dir` made first when given), refusing,
/// before anything is written, to replace one that exists unless `force`;
/// `wrote` is told each path written. The error says which path and why.
pub fn write_files(
    dir: Option<&Path>,
    files: &[(PathBuf, String)],
    force: bool,
    mut wrote: impl FnMut(&Path),
) -> Result<(), String> {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    }
    if !force {
        if let Some((path, _)) = files.iter().find(|(p, _)| p.exists()) {
            return Err(format!(
                "{} exists; pass --force to replace it",
                path.display()
            ));
        }
    }
    for (path, text) in files {
        std::fs::write(path, text)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        wrote(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_and_their_base_directories() {
        assert_eq!(Place::of(None, true), Place::Stdout);
        assert_eq!(Place::of(Some(Path::new("-")), false), Place::Stdout);
        let dir = Place::of(Some(Path::new("out/")), true);
        assert_eq!(dir, Place::Dir(PathBuf::from("out/")));
        let file = Place::of(Some(Path::new("out/")), false);
        assert_eq!(file, Place::File(PathBuf::from("out/")));
        let here = std::fs::canonicalize(".").unwrap();
        assert_eq!(Place::of(Some(Path::new("x.yaml")), false).base_dir(), here);
        assert_eq!(Place::Stdout.base_dir(), here);
    }

    #[test]
    fn nothing_is_replaced_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::write(&b, "old").unwrap();
        let files = vec![(a.clone(), "A".to_string()), (b.clone(), "B".to_string())];
        let err = write_files(None, &files, false, |_| {}).unwrap_err();
        assert!(err.contains("exists; pass --force"), "{err}");
        assert!(!a.exists(), "nothing written before the refusal");
        let mut written = Vec::new();
        write_files(None, &files, true, |p| written.push(p.to_path_buf())).unwrap();
        assert_eq!(written, vec![a, b.clone()]);
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "B");
    }
}
