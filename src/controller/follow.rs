//! The one follower of a running stack's files: the stack files (and the
//! proxy template) are watched once, an editor's save (a few events) is read
//! once they end, the stack is loaded once, and the result is published to
//! every consumer as a `tokio::sync::watch`: the registrar and the router
//! take each valid stack ([`Follower::stacks`]), the watch loop every edit,
//! valid or not ([`Follower::edits`]), to apply it or to show its problems.
//!
//! A watch keeps only the latest value: a consumer busy while two edits
//! arrive sees the second, which is what it should apply.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{LoadedStack, Tasks};
use crate::spec::{Report, Stack};
use crate::watcher::{burst, fs};

/// One load of the stack files after an edit.
#[derive(Debug, Clone)]
pub struct Edit {
    /// The file whose change was read last.
    pub file: PathBuf,
    /// The stack it holds now, or the report of what is wrong with it.
    pub stack: Result<Arc<Stack>, Arc<Report>>,
}

/// The published edits of one running stack's files.
#[derive(Debug)]
pub struct Follower {
    stacks: watch::Sender<Arc<Stack>>,
    edits: watch::Sender<Option<Edit>>,
}

impl Follower {
    /// Starts following `loaded`'s files (and its proxy template) on
    /// `tasks`, until they stop. A follower that cannot watch (the
    /// directory is gone) publishes nothing and says why.
    pub fn start(loaded: &LoadedStack, tasks: &Tasks) -> Follower {
        let (stacks, _) = watch::channel(Arc::new(loaded.stack.clone()));
        let (edits, _) = watch::channel(None);
        let follower = Follower { stacks, edits };
        let mut files = loaded.files.clone();
        files.extend(loaded.stack.proxy.template.clone());
        let (hits_tx, hits) = mpsc::unbounded_channel();
        let watcher = match fs::watch_files(&files, hits_tx) {
            Ok(w) => w,
            Err(e) => {
                sayln!("stack file edits are not followed: {e}");
                return follower;
            }
        };
        let (changes_tx, mut changes) = mpsc::unbounded_channel();
        let stop = tasks.stop_token().clone();
        let debounce_stop = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = burst::run(hits, changes_tx, burst::QUIET, burst::MAX_DELAY) => {}
                _ = debounce_stop.cancelled() => {}
            }
        });
        let (stacks, edits) = (follower.stacks.clone(), follower.edits.clone());
        let loaded = loaded.clone();
        tasks.spawn(async move {
            let _watcher = watcher;
            loop {
                let change = tokio::select! {
                    change = changes.recv() => change,
                    _ = stop.cancelled() => None,
                };
                let Some(change) = change else { return };
                let stack = loaded.reload().map(Arc::new).map_err(Arc::new);
                if let Ok(stack) = &stack {
                    stacks.send_replace(stack.clone());
                }
                edits.send_replace(Some(Edit {
                    file: change.file,
                    stack,
                }));
            }
        });
        follower
    }

    /// Each valid stack the files hold from now on.
    pub fn stacks(&self) -> watch::Receiver<Arc<Stack>> {
        self.stacks.subscribe()
    }

    /// Each load of the files from now on, valid or not.
    pub fn edits(&self) -> watch::Receiver<Option<Edit>> {
        self.edits.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FIRST: &str = "name: t\nservices:\n  api: {image: 'api:git-1', port: 8080}\n";
    const SECOND: &str = "name: t\nservices:\n  api: {image: 'api:git-2', port: 8080}\n";

    fn image(stack: &Stack) -> String {
        stack.services["api"]
            .container
            .image
            .clone()
            .unwrap_or_default()
    }

    /// Waits (bounded) until `rx` sees a new value.
    async fn next<T>(rx: &mut watch::Receiver<T>) {
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("an edit is published within 10 s")
            .expect("the follower still publishes");
    }

    /// A stack file holding `FIRST`, in a directory kept while the test runs.
    fn stack_file() -> (tempfile::TempDir, PathBuf, Tasks) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("devstack.yaml");
        std::fs::write(&file, FIRST).unwrap();
        (dir, file, Tasks::new())
    }

    #[tokio::test]
    async fn each_edit_is_loaded_once_and_published_to_every_consumer() {
        let (_dir, file, tasks) = stack_file();
        let follower = Follower::start(
            &LoadedStack::load(vec![file.clone()], None).unwrap(),
            &tasks,
        );
        // Two consumers of valid stacks (registrar, router), one of edits.
        let (mut a, mut b, mut edits) = (follower.stacks(), follower.stacks(), follower.edits());
        assert_eq!(
            image(&a.borrow()),
            "api:git-1",
            "starts with the loaded stack"
        );
        std::fs::write(&file, SECOND).unwrap();
        next(&mut a).await;
        next(&mut b).await;
        next(&mut edits).await;
        let (sa, sb) = (a.borrow_and_update().clone(), b.borrow_and_update().clone());
        assert_eq!(image(&sa), "api:git-2");
        assert!(Arc::ptr_eq(&sa, &sb), "one load, shared by every consumer");
        let edit = edits.borrow_and_update().clone().expect("an edit");
        assert!(Arc::ptr_eq(edit.stack.as_ref().unwrap(), &sa));
        assert_eq!(edit.file.file_name(), file.file_name());
        tasks.join().await;
    }

    #[tokio::test]
    async fn an_invalid_edit_reaches_the_watch_loop_only() {
        let (_dir, file, tasks) = stack_file();
        let follower = Follower::start(
            &LoadedStack::load(vec![file.clone()], None).unwrap(),
            &tasks,
        );
        let (stacks, mut edits) = (follower.stacks(), follower.edits());
        std::fs::write(&file, "name: t\nservices:\n  api: {imagee: x}\n").unwrap();
        next(&mut edits).await;
        let edit = edits.borrow_and_update().clone().expect("an edit");
        let report = edit.stack.expect_err("the edit is invalid");
        assert!(
            report.render(false).contains("imagee"),
            "{}",
            report.render(false)
        );
        assert!(
            !stacks.has_changed().unwrap(),
            "the registrar and router keep the last valid stack"
        );
        assert_eq!(image(&stacks.borrow()), "api:git-1");
        tasks.join().await;
    }

    #[tokio::test]
    async fn its_tasks_end_when_the_stack_stops() {
        let (_dir, file, tasks) = stack_file();
        let follower = Follower::start(
            &LoadedStack::load(vec![file.clone()], None).unwrap(),
            &tasks,
        );
        let mut edits = follower.edits();
        drop(follower);
        tokio::time::timeout(Duration::from_secs(10), tasks.join())
            .await
            .expect("the watcher and its debounce are joined");
        // Its senders went with its task: consumers see the end.
        assert!(edits.changed().await.is_err());
    }
}
