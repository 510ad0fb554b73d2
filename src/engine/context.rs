//! The build context: a tar of the context directory that honours
//! `.dockerignore` the way the docker CLI does.
//!
//! `.dockerignore` patterns are anchored at the context root (unlike
//! `.gitignore`, where `foo` matches at any depth), so each pattern is given
//! to the gitignore matcher with a leading `/`. `!` exceptions, `**` and
//! comments keep their meaning. The Dockerfile and `.dockerignore` are always
//! sent, as the CLI does, because the builder needs them.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Why a context could not be packed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ContextError {
    pub path: String,
    pub message: String,
}

fn err(path: &Path, message: impl ToString) -> ContextError {
    ContextError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads `<context>/.dockerignore` (absent means nothing is ignored).
pub fn dockerignore(context: &Path) -> Result<Gitignore, ContextError> {
    let mut builder = GitignoreBuilder::new(context);
    let file = context.join(".dockerignore");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(err(&file, e)),
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (negate, pattern) = match line.strip_prefix('!') {
            Some(rest) => ("!", rest.trim()),
            None => ("", line),
        };
        // Docker cleans patterns with filepath.Clean: `./a` is `a`, `/a` is `a`.
        let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
        if pattern.is_empty() {
            continue;
        }
        builder
            .add_line(None, &format!("{negate}/{pattern}"))
            .map_err(|e| err(&file, format!("pattern `{line}`: {e}")))?;
    }
    builder.build().map_err(|e| err(&file, e))
}

/// Packs the context into an in-memory tar. Builds contexts are source trees,
/// small enough for memory; a stream would only matter for huge contexts.
/// Metadata is made deterministic (owner root, fixed mtime) so an unchanged
/// tree gives the builder's cache the same input every time.
pub fn pack(context: &Path, dockerfile: &str) -> Result<Vec<u8>, ContextError> {
    let meta = std::fs::metadata(context).map_err(|e| err(context, e))?;
    if !meta.is_dir() {
        return Err(err(context, "the build context is not a directory"));
    }
    let ignore = dockerignore(context)?;
    let dockerfile_rel = PathBuf::from(dockerfile.trim_start_matches("./"));
    if !context.join(&dockerfile_rel).is_file() {
        return Err(err(
            &context.join(&dockerfile_rel),
            "the Dockerfile does not exist",
        ));
    }
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    walk(
        context,
        Path::new(""),
        &ignore,
        &dockerfile_rel,
        false,
        &mut tar,
    )?;
    tar.into_inner().map_err(|e| err(context, e))
}

fn walk(
    root: &Path,
    rel: &Path,
    ignore: &Gitignore,
    dockerfile: &Path,
    // Inside an ignored directory that holds the Dockerfile: only the way to it.
    pruned: bool,
    tar: &mut tar::Builder<Vec<u8>>,
) -> Result<(), ContextError> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| err(&dir, e))?
        .filter_map(Result::ok)
        .collect();
    // Sorted, so the same tree always gives the same tar.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel_path = rel.join(entry.file_name());
        let full = entry.path();
        let file_type = entry.file_type().map_err(|e| err(&full, e))?;
        let is_dir = file_type.is_dir();
        let always = rel_path == dockerfile || rel_path == Path::new(".dockerignore");
        let leads_to_dockerfile = is_dir && dockerfile.starts_with(&rel_path);
        let ignored = pruned
            || ignore
                .matched_path_or_any_parents(&full, is_dir)
                .is_ignore();
        if ignored && !always && !leads_to_dockerfile {
            continue;
        }
        if is_dir {
            tar.append_dir(&rel_path, &full)
                .map_err(|e| err(&full, e))?;
            walk(root, &rel_path, ignore, dockerfile, ignored, tar)?;
        } else if file_type.is_file() || file_type.is_symlink() {
            tar.append_path_with_name(&full, &rel_path)
                .map_err(|e| err(&full, e))?;
        }
        // Sockets, fifos and devices are not part of a build context.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out: Vec<String> = archive
            .entries()
            .expect("a tar we just made")
            .filter_map(|e| e.ok())
            .filter(|e| !e.header().entry_type().is_dir())
            .map(|e| e.path().expect("a path").display().to_string())
            .collect();
        out.sort();
        out
    }

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temp dir");
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        dir
    }

    #[test]
    fn dockerignore_patterns_are_anchored_at_the_root() {
        let dir = tree(&[
            ("Dockerfile", "FROM x"),
            (
                ".dockerignore",
                "# comment\nsecret.txt\n*.log\nnode_modules\n!keep.log\n",
            ),
            ("secret.txt", ""),
            ("sub/secret.txt", ""),
            ("a.log", ""),
            ("keep.log", ""),
            ("sub/b.log", ""),
            ("node_modules/x/y.js", ""),
            ("src/main.py", ""),
        ]);
        let packed = pack(dir.path(), "Dockerfile").expect("packs");
        assert_eq!(
            names(&packed),
            vec![
                ".dockerignore",
                "Dockerfile",
                "keep.log",
                "src/main.py",
                "sub/b.log",
                "sub/secret.txt"
            ]
        );
    }

    #[test]
    fn double_star_and_an_ignored_dockerfile() {
        let dir = tree(&[
            ("build/Dockerfile", "FROM x"),
            (".dockerignore", "**/*.pyc\nbuild\n"),
            ("a/b/c.pyc", ""),
            ("a/b/c.py", ""),
        ]);
        let packed = pack(dir.path(), "build/Dockerfile").expect("packs");
        assert_eq!(
            names(&packed),
            vec![".dockerignore", "a/b/c.py", "build/Dockerfile"]
        );
    }

    #[test]
    fn a_missing_dockerfile_is_named() {
        let dir = tree(&[("x", "")]);
        let e = pack(dir.path(), "Dockerfile").unwrap_err();
        assert!(
            e.to_string().contains("the Dockerfile does not exist"),
            "{e}"
        );
    }

    #[test]
    fn packing_twice_gives_the_same_bytes() {
        let dir = tree(&[("Dockerfile", "FROM x"), ("a", "1"), ("b/c", "2")]);
        assert_eq!(
            pack(dir.path(), "Dockerfile").expect("packs"),
            pack(dir.path(), "Dockerfile").expect("packs")
        );
    }
}
