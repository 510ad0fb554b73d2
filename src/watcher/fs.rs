//! notify events to [`Hit`]s: one recursive watch per watched root; events
//! whose path a service's [`Filter`] ignores are dropped here, on notify's
//! thread, so a `git checkout` of ignored files costs nothing downstream.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{Filter, Hit, WatchError};

/// One service's watched root and what to ignore under it.
#[derive(Debug)]
pub struct Target {
    pub service: String,
    pub filter: Filter,
}

/// Keeps the OS watches alive; dropping it stops them.
pub struct SourceWatcher {
    _watcher: Arc<Mutex<RecommendedWatcher>>,
    rewatch: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SourceWatcher {
    fn drop(&mut self) {
        if let Some(t) = self.rewatch.take() {
            t.abort();
        }
    }
}

/// How often the roots are checked for having been removed and made again.
const REWATCH_EVERY: Duration = Duration::from_millis(500);

/// Needs a tokio runtime: a task watches a root again after it was removed
/// and recreated (the OS watch died with the directory).
pub fn watch(
    targets: Vec<Target>,
    hits: mpsc::UnboundedSender<Hit>,
) -> Result<SourceWatcher, WatchError> {
    let roots: Vec<(String, PathBuf)> = targets
        .iter()
        .map(|t| (t.service.clone(), t.filter.root().to_path_buf()))
        .collect();
    let rewatch_hits = hits.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        // An error from notify (a queue overflow, a vanished watch) must not
        // end watching; the next event still arrives.
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_) | EventKind::Other) {
            return;
        }
        for path in &event.paths {
            for t in &targets {
                if !t.filter.ignored(path) {
                    let _ = hits.send(Hit {
                        service: t.service.clone(),
                        file: path.clone(),
                    });
                }
            }
        }
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(|e| WatchError::Notify {
        path: String::new(),
        message: e.to_string(),
    })?;
    for (_, root) in &roots {
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(|e| WatchError::Notify {
                path: root.display().to_string(),
                message: e.to_string(),
            })?;
    }
    let watcher = Arc::new(Mutex::new(watcher));
    let shared = watcher.clone();
    let rewatch = tokio::spawn(async move {
        let mut lost: BTreeSet<PathBuf> = BTreeSet::new();
        let mut tick = tokio::time::interval(REWATCH_EVERY);
        loop {
            tick.tick().await;
            for (service, root) in &roots {
                if !root.is_dir() {
                    lost.insert(root.clone());
                } else if lost.contains(root) {
                    let Ok(mut w) = shared.lock() else { return };
                    // The old watch may linger in notify's table; drop it first.
                    let _ = w.unwatch(root);
                    if w.watch(root, RecursiveMode::Recursive).is_ok() {
                        lost.remove(root);
                        // Its content is new: that is a change of the service.
                        let _ = rewatch_hits.send(Hit {
                            service: service.clone(),
                            file: root.clone(),
                        });
                    }
                }
            }
        }
    });
    Ok(SourceWatcher {
        _watcher: watcher,
        rewatch: Some(rewatch),
    })
}

/// The service name [`watch_files`] reports stack file changes under; no
/// service can be called this (names are non-empty).
pub const STACK: &str = "";

/// Watches single files (the stack files) through their directories, since
/// editors often replace a file by renaming a new one over it.
pub fn watch_files(
    files: &[std::path::PathBuf],
    hits: mpsc::UnboundedSender<Hit>,
) -> Result<SourceWatcher, WatchError> {
    let files: Vec<std::path::PathBuf> = files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect();
    // A directory of Kubernetes manifests or fleet units is watched itself:
    // an edit of any `.yaml`/`.yml`/`.service` file in it is a stack edit.
    let manifest_dirs: Vec<std::path::PathBuf> =
        files.iter().filter(|f| f.is_dir()).cloned().collect();
    let dirs: std::collections::BTreeSet<std::path::PathBuf> = files
        .iter()
        .filter_map(|f| {
            if f.is_dir() {
                Some(f.clone())
            } else {
                f.parent().map(|p| p.to_path_buf())
            }
        })
        .collect();
    let wanted = files.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_) | EventKind::Other) {
            return;
        }
        for path in &event.paths {
            let in_manifest_dir = path
                .parent()
                .is_some_and(|p| manifest_dirs.iter().any(|d| d == p))
                && path
                    .extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "service");
            if wanted.contains(path) || in_manifest_dir {
                let _ = hits.send(Hit {
                    service: STACK.into(),
                    file: path.clone(),
                });
            }
        }
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(|e| WatchError::Notify {
        path: String::new(),
        message: e.to_string(),
    })?;
    for dir in dirs {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| WatchError::Notify {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
    }
    Ok(SourceWatcher {
        _watcher: Arc::new(Mutex::new(watcher)),
        rewatch: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ignore::gitignore::Gitignore;

    async fn next(rx: &mut mpsc::UnboundedReceiver<Hit>) -> Option<Hit> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn edits_are_seen_and_a_root_removed_and_made_again_is_watched_again() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("web");
        std::fs::create_dir(&root).unwrap();
        let filter = Filter::new("web", &root, Gitignore::empty(), &[]).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _w = watch(
            vec![Target {
                service: "web".into(),
                filter,
            }],
            tx,
        )
        .unwrap();
        std::fs::write(root.join(".a.swp"), "x").unwrap();
        std::fs::write(root.join("a.txt"), "1").unwrap();
        let hit = next(&mut rx).await.expect("a hit");
        assert_eq!(hit.file, root.join("a.txt"), "the swap file never counts");

        std::fs::remove_dir_all(&root).unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        std::fs::create_dir(&root).unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        while rx.try_recv().is_ok() {}
        std::fs::write(root.join("b.txt"), "2").unwrap();
        let mut seen = false;
        while let Some(h) = next(&mut rx).await {
            if h.file == root.join("b.txt") {
                seen = true;
                break;
            }
        }
        assert!(seen, "an edit in the recreated root is seen");
    }

    #[tokio::test]
    async fn an_edit_in_a_directory_of_manifests_is_a_stack_edit() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("k8s");
        std::fs::create_dir(&dir).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _w = watch_files(std::slice::from_ref(&dir), tx).unwrap();
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        std::fs::write(dir.join("web.yaml"), "kind: Service\n").unwrap();
        let hit = next(&mut rx).await.expect("a hit");
        assert_eq!(hit.service, STACK);
        assert_eq!(hit.file, dir.join("web.yaml"), "only manifests count");
    }
}
