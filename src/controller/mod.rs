//! `controller`: one running stack, from its files to its containers and its
//! routing path, and everything that lives only while it runs.
//!
//! - [`stack`]: the stack loaded from its files under its project name.
//! - [`state`]: the project's state directory: `routing.json` (read and
//!   written only through it, with a schema version), the locks, the agent's log.
//! - [`follow`]: the one follower of the stack files: each edit loaded once
//!   and published to every consumer as a `tokio::sync::watch`.
//! - [`agent`]: the routing path (etcd, registrar, proxy, router) started for
//!   a stack, in this process or in a background `devstack agent`; found and
//!   stopped through `routing.json`.
//! - [`watch`]: the watch loop: source saves rebuilt and swapped, stack edits
//!   applied to the running stack.
//! - [`ps`]: a project's containers with their state and health.
//! - [`registry`]: where a stack's registry answers, and the routes it serves.
//! - [`task`]: the container `run TASK` or `exec SERVICE` attaches to.
//! - [`serve`]: the embedded etcd server run on its own (`devstack etcd serve`).
//! - [`test`], [`reaper`], [`projects`]: `devstack test`'s throwaway copies,
//!   the watchdog that removes one whose `devstack test` was killed, and
//!   `ls`/`prune` for every project on the engine.
//! - [`up`], [`down`], [`restart`], [`scale`], [`data`] (restore): those
//!   commands as whole operations on a
//!   running stack (`watch::run` and `agent::run` are the other two).
//!
//! Every task a running stack starts is spawned on its [`Tasks`] (one
//! cancellation token, one task tracker) and joined when it stops.

pub mod agent;
pub mod data;
pub mod down;
pub mod follow;
pub mod listen;
pub mod overlay;
pub mod projects;
pub mod ps;
pub mod reaper;
pub mod registry;
pub mod restart;
pub mod routing;
pub mod scale;
pub mod serve;
pub mod stack;
pub mod state;
pub mod task;
pub mod test;
pub mod up;
pub mod watch;

use std::future::Future;

use tokio::sync::watch as latest;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use stack::LoadedStack;

/// The tasks of one running stack: one token that stops them, one tracker
/// that joins them. Nothing a controller starts is spawned anywhere else.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    stop: CancellationToken,
    /// Fires in [`Tasks::join`], after `stop`: for the tasks that must
    /// outlive the stop (the signal listener counts the Ctrl-C that forces it).
    end: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Fires once the stack is to stop (the first Ctrl-C, SIGTERM, or the end
    /// of what the command was for).
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Runs `task` until it ends; [`Tasks::join`] waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Stops everything and waits until every task spawned has ended.
    pub async fn join(&self) {
        self.stop.cancel();
        self.end.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Which signals stop a running stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signals {
    /// Ctrl-C (`up`, `watch`): the first stops gracefully, the next forces.
    Interrupt,
    /// Ctrl-C or SIGTERM (`devstack agent`, which `down` stops with SIGTERM).
    InterruptOrTerminate,
}

/// Counts the stop signals: the first cancels the stack's stop token, later
/// ones are counted for whoever is stopping it (the second forces). The one
/// place devstack listens for signals while a stack runs; the listener is a
/// task of `tasks`, joined with them.
pub fn on_signals(tasks: &Tasks, which: Signals) -> latest::Receiver<u32> {
    let (tx, rx) = latest::channel(0u32);
    let stop = tasks.stop.clone();
    let done = tasks.end.clone();
    #[cfg(unix)]
    let term = match which {
        Signals::Interrupt => None,
        Signals::InterruptOrTerminate => {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
        }
    };
    // No SIGTERM on Windows: Ctrl-Break stands in for it.
    #[cfg(windows)]
    let term = match which {
        Signals::Interrupt => None,
        Signals::InterruptOrTerminate => tokio::signal::windows::ctrl_break().ok(),
    };
    tasks.spawn(async move {
        let mut term = term;
        let mut count = 0u32;
        loop {
            let terminated = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                Some(()) = terminated => {}
                _ = done.cancelled() => return,
            }
            count += 1;
            // Counted before the cancel wakes anyone, so the first signal is
            // never mistaken for a second one.
            let _ = tx.send(count);
            stop.cancel();
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn join_stops_and_waits_for_every_task() {
        let tasks = Tasks::new();
        let ended = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let (stop, ended) = (tasks.stop_token().clone(), ended.clone());
            tasks.spawn(async move {
                stop.cancelled().await;
                // Work after the stop (deregistering, say) is waited for too.
                tokio::time::sleep(Duration::from_millis(20)).await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
        tasks.join().await;
        assert_eq!(ended.load(Ordering::SeqCst), 3);
        assert!(tasks.stop_token().is_cancelled());
    }

    #[tokio::test]
    async fn the_signal_listener_outlives_the_stop_and_ends_at_join() {
        let tasks = Tasks::new();
        let count = on_signals(&tasks, Signals::InterruptOrTerminate);
        // Stopped for another reason than a signal: still counting, so a
        // Ctrl-C during the graceful stop would still force it.
        tasks.stop_token().cancel();
        tokio::task::yield_now().await;
        assert!(count.has_changed().is_ok(), "the listener still runs");
        tokio::time::timeout(Duration::from_secs(5), tasks.join())
            .await
            .expect("joined");
        assert!(
            count.has_changed().is_err(),
            "the listener ended with the join"
        );
    }
}
