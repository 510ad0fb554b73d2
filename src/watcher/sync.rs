//! `watch.action: sync`: the changed files are copied into the running
//! containers (no new image, no new container), then the stack's `then`
//! command runs in each. A change to a file matching `rebuild_on` (a
//! dependency manifest) needs a rebuild instead, which the caller does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::swap::{Outcome, Report};
use super::WatchError;
use crate::engine::Engine;
use crate::plan::ObservedState;

/// How long a `then` command may run before the sync is reported failed.
const THEN_TIMEOUT: Duration = Duration::from_secs(60);

/// One service's sync rules.
#[derive(Debug)]
pub struct Sync {
    /// The watched roots; a file's path below its root is its path below `target`.
    roots: Vec<(PathBuf, Gitignore)>,
    target: String,
    then: Option<Vec<String>>,
}

impl Sync {
    pub fn new(
        service: &str,
        roots: &[PathBuf],
        target: &str,
        rebuild_on: &[String],
        then: Option<Vec<String>>,
    ) -> Result<Sync, WatchError> {
        let mut out = Vec::new();
        for root in roots {
            let mut b = GitignoreBuilder::new(root);
            for p in rebuild_on {
                b.add_line(None, p).map_err(|e| WatchError::Pattern {
                    service: service.into(),
                    pattern: p.clone(),
                    message: e.to_string(),
                })?;
            }
            let m = b.build().map_err(|e| WatchError::Pattern {
                service: service.into(),
                pattern: rebuild_on.join(" "),
                message: e.to_string(),
            })?;
            out.push((root.clone(), m));
        }
        Ok(Sync {
            roots: out,
            target: target.trim_end_matches('/').to_string(),
            then,
        })
    }

    /// Where `file` lands in the container, or `None` when it is under no root.
    pub fn destination(&self, file: &Path) -> Option<String> {
        self.roots.iter().find_map(|(root, _)| {
            let rel = file.strip_prefix(root).ok()?;
            let rel = rel.to_str()?;
            (!rel.is_empty()).then(|| format!("{}/{rel}", self.target))
        })
    }

    /// True when one of the files needs a rebuild (or is outside every root).
    pub fn needs_rebuild<'a>(&self, files: impl IntoIterator<Item = &'a PathBuf>) -> bool {
        files.into_iter().any(
            |f| match self.roots.iter().find(|(root, _)| f.starts_with(root)) {
                Some((root, m)) => f
                    .strip_prefix(root)
                    .map(|rel| m.matched_path_or_any_parents(rel, false).is_ignore())
                    .unwrap_or(true),
                None => true,
            },
        )
    }

    /// Copies (or deletes) `files` in every running container of `service`.
    pub async fn run(
        &self,
        engine: &Engine,
        project: &str,
        service: &str,
        trigger: &str,
        files: &BTreeSet<PathBuf>,
    ) -> Report {
        let t0 = Instant::now();
        let outcome = self.apply(engine, project, service, files).await;
        Report {
            service: service.into(),
            trigger: trigger.into(),
            build_ms: 0,
            swap_ms: t0.elapsed().as_millis() as u64,
            superseded: 0,
            outcome,
        }
    }

    async fn apply(
        &self,
        engine: &Engine,
        project: &str,
        service: &str,
        files: &BTreeSet<PathBuf>,
    ) -> Outcome {
        let failed = |message: String| Outcome::Failed { message };
        let observed = match engine.list_project(project).await {
            Ok(o) => o,
            Err(e) => return failed(e.to_string()),
        };
        let running: Vec<_> = observed
            .iter()
            .filter(|o| o.task.is_none() && o.service.as_deref() == Some(service))
            .filter(|o| o.state == ObservedState::Running)
            .collect();
        // Read every file once, before touching any container: a file that
        // vanished is deleted there, one that cannot be read fails the sync.
        let mut writes = Vec::new();
        let mut deletes = Vec::new();
        for f in files {
            let Some(dest) = self.destination(f) else {
                continue;
            };
            if f.is_dir() {
                continue;
            }
            match std::fs::read(f) {
                Ok(bytes) => writes.push((dest, bytes, mode_of(f))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => deletes.push(dest),
                Err(e) => return failed(format!("reading {}: {e}", f.display())),
            }
        }
        let mut names = Vec::new();
        for c in &running {
            for (dest, bytes, mode) in &writes {
                if let Err(e) = engine.copy_into(&c.id, dest, bytes, *mode).await {
                    return failed(e.to_string());
                }
            }
            if !deletes.is_empty() {
                let mut argv = vec!["rm".to_string(), "-f".into(), "--".into()];
                argv.extend(deletes.iter().cloned());
                if let Err(e) = engine.exec_capture(&c.id, &argv, THEN_TIMEOUT).await {
                    return failed(e.to_string());
                }
            }
            if let Some(then) = &self.then {
                match engine.exec_capture(&c.id, then, THEN_TIMEOUT).await {
                    Ok(out) if out.exit_code == Some(0) => {}
                    Ok(out) => {
                        return failed(format!(
                            "`{}` in `{}` exited with {:?}: {}",
                            then.join(" "),
                            c.name,
                            out.exit_code,
                            out.output.trim()
                        ))
                    }
                    Err(e) => return failed(e.to_string()),
                }
            }
            names.push(c.name.clone());
        }
        Outcome::Synced {
            files: writes.len() + deletes.len(),
            containers: names,
        }
    }
}

/// The file's permission bits, so a synced script stays executable.
fn mode_of(f: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(f)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_under_the_target_and_manifests_rebuild() {
        let s = Sync::new(
            "web",
            &[PathBuf::from("/src/web")],
            "/app/",
            &["requirements.txt".into(), "package.json".into()],
            None,
        )
        .unwrap();
        assert_eq!(
            s.destination(Path::new("/src/web/sub/a.py")).as_deref(),
            Some("/app/sub/a.py")
        );
        assert_eq!(s.destination(Path::new("/elsewhere/a.py")), None);
        let code = [PathBuf::from("/src/web/a.py")];
        assert!(!s.needs_rebuild(&code));
        let manifest = [
            PathBuf::from("/src/web/a.py"),
            PathBuf::from("/src/web/requirements.txt"),
        ];
        assert!(s.needs_rebuild(&manifest));
        assert!(s.needs_rebuild(&[PathBuf::from("/src/web/lib/package.json")]));
    }
}
