//! notify events to [`Hit`]s: one recursive watch per watched root; events
//! whose path a service's [`Filter`] ignores are dropped here, on notify's
//! thread, so a `git checkout` of ignored files costs nothing downstream.

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
    _watcher: RecommendedWatcher,
}

pub fn watch(
    targets: Vec<Target>,
    hits: mpsc::UnboundedSender<Hit>,
) -> Result<SourceWatcher, WatchError> {
    let roots: Vec<_> = targets
        .iter()
        .map(|t| t.filter.root().to_path_buf())
        .collect();
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
    for root in roots {
        watcher
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|e| WatchError::Notify {
                path: root.display().to_string(),
                message: e.to_string(),
            })?;
    }
    Ok(SourceWatcher { _watcher: watcher })
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
    let dirs: std::collections::BTreeSet<std::path::PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(|p| p.to_path_buf()))
        .collect();
    let wanted = files.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_) | EventKind::Other) {
            return;
        }
        for path in &event.paths {
            if wanted.contains(path) {
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
    Ok(SourceWatcher { _watcher: watcher })
}
