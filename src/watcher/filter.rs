//! Which paths under a watched root never trigger: the context's
//! `.dockerignore` (what the build would not see anyway), the stack's
//! `watch.ignore` patterns, editor swap and backup files, VCS folders.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::WatchError;

/// Folders of version control systems: a `git commit` writes there, the build never reads there.
const VCS_DIRS: &[&str] = &[".git", ".hg", ".svn", ".jj"];

#[derive(Debug)]
pub struct Filter {
    root: PathBuf,
    dockerignore: Gitignore,
    stack: Gitignore,
}

impl Filter {
    /// `root` is the watched path; `dockerignore` comes from the build context
    /// (empty when the watched path is not the context).
    pub fn new(
        service: &str,
        root: &Path,
        dockerignore: Gitignore,
        patterns: &[String],
    ) -> Result<Filter, WatchError> {
        let mut b = GitignoreBuilder::new(root);
        for p in patterns {
            b.add_line(None, p).map_err(|e| WatchError::Pattern {
                service: service.into(),
                pattern: p.clone(),
                message: e.to_string(),
            })?;
        }
        let stack = b.build().map_err(|e| WatchError::Pattern {
            service: service.into(),
            pattern: patterns.join(" "),
            message: e.to_string(),
        })?;
        Ok(Filter {
            root: root.to_path_buf(),
            dockerignore,
            stack,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when a change to `path` should not trigger (including paths outside the root).
    pub fn ignored(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return true;
        };
        if rel.as_os_str().is_empty() {
            // The root itself (its mtime changes with every file): the file events say more.
            return true;
        }
        if rel
            .components()
            .any(|c| VCS_DIRS.iter().any(|v| c.as_os_str() == *v))
        {
            return true;
        }
        if let Some(name) = rel.file_name().and_then(|n| n.to_str()) {
            if is_editor_scratch(name) {
                return true;
            }
        }
        // Matched relative to the root: the matchers were built with it, and a
        // relative path can never fall outside it (which the crate would reject).
        self.dockerignore
            .matched_path_or_any_parents(rel, false)
            .is_ignore()
            || self
                .stack
                .matched_path_or_any_parents(rel, false)
                .is_ignore()
    }
}

/// Swap, backup and lock files editors write next to the file being saved.
fn is_editor_scratch(name: &str) -> bool {
    name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swo")
        || name.ends_with(".swx")
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        // vim probes whether it may write a directory with this name.
        || name == "4913"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(dockerignore: &[&str], stack: &[&str]) -> Filter {
        let root = Path::new("/src/web");
        let mut b = GitignoreBuilder::new(root);
        for l in dockerignore {
            b.add_line(None, l).unwrap();
        }
        let stack: Vec<String> = stack.iter().map(|s| s.to_string()).collect();
        Filter::new("web", root, b.build().unwrap(), &stack).unwrap()
    }

    #[test]
    fn ignores_what_never_reaches_the_build_or_is_scratch() {
        let f = filter(&["node_modules", "*.log"], &["tmp/"]);
        for p in [
            "/src/web/node_modules/x/index.js",
            "/src/web/debug.log",
            "/src/web/tmp/a.txt",
            "/src/web/.git/index",
            "/src/web/sub/.hg/store",
            "/src/web/.app.py.swp",
            "/src/web/app.py~",
            "/src/web/4913",
            "/src/web/.#app.py",
            "/src/other/app.py",
            "/src/web",
        ] {
            assert!(f.ignored(Path::new(p)), "{p} should be ignored");
        }
        for p in [
            "/src/web/app.py",
            "/src/web/sub/message.txt",
            "/src/web/Dockerfile",
        ] {
            assert!(!f.ignored(Path::new(p)), "{p} should trigger");
        }
    }

    #[test]
    fn odd_patterns_are_an_error_or_a_filter_never_a_panic() {
        // The ignore crate accepts some of these as literals; what matters is
        // that a stack's typo reaches the user as a value.
        for p in ["a[", "{a", "**/***", "[z-a]", "\\"] {
            match Filter::new("web", Path::new("/x"), Gitignore::empty(), &[p.into()]) {
                Ok(f) => {
                    let _ = f.ignored(Path::new("/x/a/b"));
                }
                Err(e) => assert!(matches!(e, WatchError::Pattern { .. })),
            }
        }
    }
}
