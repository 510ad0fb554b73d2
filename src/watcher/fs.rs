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
