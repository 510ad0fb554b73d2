//! The watch loop's fast path (`watcher::fast`): what it knows per service,
//! and the real build it runs behind each fast swap.
//!
//! A service has a base once the watcher knows that the image its running
//! containers were made from is what the sources build: at the start (a
//! build from the cache gives the same image) or after a full rebuild. A
//! save then places the files changed since the base (all of them, every
//! time, so no earlier save is lost) on that image, when the Dockerfile
//! allows it. Behind the swap the real build runs; when it is done, each
//! placed path is compared between it and the new containers (kind, mode,
//! owner, mtime, content, link target) and so are the image
//! configurations: a difference is a warning naming the files, and that
//! service takes full builds for the rest of the session; otherwise the
//! containers are recorded as holding that build (`engine::adopted`), so the
//! next `up` keeps them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state;
use crate::engine::adopted::{self, Adoption};
use crate::engine::Engine;
use crate::plan::names;
use crate::plan::names::ProjectName;
use crate::plan::ObservedState;
use crate::spec::Stack;
use crate::watcher::fast::{self, Overlay};
use crate::watcher::swap::{self, Built};

/// How long the build behind a fast swap waits for another save first.
const BEHIND_QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// Set to `off`, every save takes the full build.
pub const OFF_VAR: &str = "DEVSTACK_WATCH_OVERLAY";

/// The image a service's running containers were made from, known to be
/// what the sources built, and the files changed since.
#[derive(Debug, Clone)]
struct Base {
    image: String,
    files: BTreeSet<PathBuf>,
}

/// The fast path's state for one watch loop.
#[derive(Default)]
pub struct FastPath {
    bases: BTreeMap<String, Base>,
    /// Services whose fast swap differed from the real build.
    disabled: Arc<Mutex<BTreeSet<String>>>,
    /// The real build behind the last fast swap of each service.
    behind: BTreeMap<String, CancellationToken>,
    /// The last image a build behind made per service, removed when the
    /// next one replaces it (untagged, unused).
    last_built: Arc<Mutex<BTreeMap<String, String>>>,
    tasks: TaskTracker,
    /// Warnings as JSON events (`watch --json`).
    json: bool,
}

/// A fast swap's new image, and what to remember once it swapped.
pub struct Attempt {
    pub built: Built,
    files: BTreeSet<PathBuf>,
}

impl FastPath {
    /// Learns the base of each service in `services` whose running
    /// containers all run the image a build (from the cache, when nothing
    /// changed) gives now.
    pub async fn start(
        engine: &Engine,
        stack: &Stack,
        project: &str,
        services: &[String],
        json: bool,
    ) -> Self {
        let mut fp = FastPath {
            json,
            ..FastPath::default()
        };
        for service in services {
            let Ok(Some(running)) = running_image(engine, project, service, None).await else {
                continue;
            };
            if let Ok(built) = swap::build(engine, stack, project, service).await {
                if built.image_id == running {
                    fp.bases.insert(
                        service.clone(),
                        Base {
                            image: running,
                            files: BTreeSet::new(),
                        },
                    );
                }
            }
        }
        fp
    }

    /// Ends the build behind the last fast swap of `service` (a full
    /// build, or a newer fast swap, takes over; two builds would race for
    /// the tag).
    pub fn stop_behind(&mut self, service: &str) {
        if let Some(token) = self.behind.remove(service) {
            token.cancel();
        }
    }

    /// The fast swap of `files` for `service`, or why it does not apply.
    pub async fn attempt(
        &mut self,
        engine: &Engine,
        stack: &Stack,
        project: &str,
        service: &str,
        files: &BTreeSet<PathBuf>,
        retiring: &swap::Retiring,
    ) -> Result<Attempt, String> {
        if std::env::var(OFF_VAR).is_ok_and(|v| v == "off") {
            return Err(format!("{OFF_VAR}=off"));
        }
        if self.disabled.lock().is_ok_and(|d| d.contains(service)) {
            return Err("an earlier fast swap differed from its build".into());
        }
        let Some(base) = self.bases.get(service).cloned() else {
            return Err("the running image is not known to match the sources yet".into());
        };
        let Some(build) = stack.unit(service).and_then(|u| u.build.as_ref()) else {
            return Err("no build".into());
        };
        match running_image(engine, project, service, Some(retiring)).await {
            Ok(Some(image)) if image == base.image => {}
            _ => {
                self.bases.remove(service);
                return Err("the running containers are not all from the known image".into());
            }
        }
        let mut all = base.files.clone();
        all.extend(files.iter().cloned());
        let build = build.clone();
        let for_overlay = all.clone();
        let overlay = tokio::task::spawn_blocking(move || fast::overlay(&build, &for_overlay))
            .await
            .map_err(|e| e.to_string())??;
        // The ONBUILD triggers of the image the stage starts from run in
        // the build, before any step of the Dockerfile.
        match engine.image_config(&overlay.root).await {
            Ok(config) if config["OnBuild"].as_array().is_none_or(|a| a.is_empty()) => {}
            Ok(_) => return Err(format!("{} has ONBUILD triggers", overlay.root)),
            Err(e) => return Err(e.to_string()),
        }
        let unit = stack.unit(service).ok_or("not in the stack")?;
        let tag = unit
            .image
            .clone()
            .unwrap_or_else(|| names::built_image_tag(project, service));
        Ok(Attempt {
            built: Built {
                tag,
                image_id: base.image,
                overlay: Some(Arc::new(overlay)),
            },
            files: all,
        })
    }

    /// After a fast swap's deploy: the files stay changed since the base
    /// whatever happened; when it swapped, the real build starts behind it.
    pub fn swapped_fast(
        &mut self,
        engine: &Engine,
        stack: &Stack,
        project: &str,
        service: &str,
        attempt: Attempt,
        outcome: &swap::Outcome,
    ) {
        if let Some(base) = self.bases.get_mut(service) {
            base.files = attempt.files;
        }
        let swap::Outcome::Swapped { containers } = outcome else {
            return;
        };
        if containers.is_empty() {
            return;
        }
        let Some(overlay) = attempt.built.overlay.clone() else {
            return;
        };
        self.stop_behind(service);
        let token = CancellationToken::new();
        self.behind.insert(service.to_string(), token.clone());
        let job = Behind {
            engine: engine.clone(),
            stack: stack.clone(),
            project: project.to_string(),
            service: service.to_string(),
            base: attempt.built.image_id.clone(),
            fast_hash: swap::service_hash(
                engine,
                stack,
                project,
                service,
                &attempt.built.hash_id(),
            ),
            overlay,
            disabled: self.disabled.clone(),
            last_built: self.last_built.clone(),
            json: self.json,
        };
        self.tasks.spawn(async move { job.run(token).await });
    }

    /// After a full rebuild: its image is the new base when it swapped.
    pub fn swapped_full(
        &mut self,
        engine: &Engine,
        service: &str,
        image: Option<&str>,
        outcome: &swap::Outcome,
        files: &BTreeSet<PathBuf>,
    ) {
        match (outcome, image) {
            (swap::Outcome::Swapped { .. }, Some(image)) => {
                // The last build behind a fast swap is nobody's tag now.
                let last = self
                    .last_built
                    .lock()
                    .ok()
                    .and_then(|mut l| l.remove(service));
                if let Some(prev) = last.filter(|p| p != image) {
                    let engine = engine.clone();
                    self.tasks
                        .spawn(async move { engine.remove_unused_image(&prev).await });
                }
                self.bases.insert(
                    service.to_string(),
                    Base {
                        image: image.to_string(),
                        files: BTreeSet::new(),
                    },
                );
            }
            _ => {
                if let Some(base) = self.bases.get_mut(service) {
                    base.files.extend(files.iter().cloned());
                }
            }
        }
    }

    /// Files that changed without a build (`watch.action: sync` copied
    /// them into the running containers): still changed since the base, so
    /// placed by the next fast swap too.
    pub fn changed_in_place(&mut self, service: &str, files: &BTreeSet<PathBuf>) {
        if let Some(base) = self.bases.get_mut(service) {
            base.files.extend(files.iter().cloned());
        }
    }

    /// Forgets every base and ends the builds behind (an edit of the stack
    /// file may change any service's build): each service's next save
    /// takes the full build.
    pub fn forget(&mut self) {
        self.bases.clear();
        for token in std::mem::take(&mut self.behind).into_values() {
            token.cancel();
        }
    }

    /// Waits for the builds behind and their comparisons (a build from the
    /// cache plus one layer: seconds), so the next `up` keeps the containers.
    pub async fn finish(&mut self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Waits (at most a minute) for the builds a running watcher runs behind
/// its fast swaps, so that `up` finds those containers recorded as holding
/// the image it builds and keeps them. Without a live watcher (nobody holds
/// the watch lock) nothing finishes them: no wait.
pub async fn wait_behind(engine: &Engine, project: &ProjectName) {
    let Some(file) = engine.adoption_file(project.as_str()) else {
        return;
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < until {
        if !adopted::read(&file).values().any(|a| a.pending) {
            return;
        }
        if state::try_lock(project, state::LockKind::Watch).is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The image every running container of `service` was made from; `None`
/// when none runs or they differ.
async fn running_image(
    engine: &Engine,
    project: &str,
    service: &str,
    retiring: Option<&swap::Retiring>,
) -> Result<Option<String>, crate::engine::EngineError> {
    let network = names::network_name(project);
    let observed = engine.list_project(project).await?;
    let mut image: Option<String> = None;
    for o in observed
        .iter()
        .filter(|o| o.task.is_none() && o.service.as_deref() == Some(service))
        .filter(|o| o.state == ObservedState::Running)
        .filter(|o| !retiring.is_some_and(|r| r.contains(&o.id)))
    {
        let Some(this) = engine.inspect(&o.id, &network).await?.image else {
            return Ok(None);
        };
        match &image {
            Some(i) if *i != this => return Ok(None),
            _ => image = Some(this),
        }
    }
    Ok(image)
}

/// The real build behind one fast swap, and its comparison.
struct Behind {
    engine: Engine,
    stack: Stack,
    project: String,
    service: String,
    /// The image the fast containers were made from.
    base: String,
    /// Their configuration hash.
    fast_hash: Option<String>,
    overlay: Arc<Overlay>,
    disabled: Arc<Mutex<BTreeSet<String>>>,
    last_built: Arc<Mutex<BTreeMap<String, String>>>,
    json: bool,
}

impl Behind {
    async fn run(self, token: CancellationToken) {
        // `up` waits for these while the watcher runs, so it finds them
        // recorded once the build is done.
        let fast = self.fast_containers().await;
        let file = self.engine.adoption_file(&self.project);
        if let Some(file) = &file {
            let pending = fast
                .iter()
                .map(|id| {
                    (
                        id.clone(),
                        Adoption {
                            hash: String::new(),
                            image: String::new(),
                            pending: true,
                        },
                    )
                })
                .collect();
            let _ = adopted::record(file, pending, &self.alive().await);
        }
        // A moment of quiet first: a save right after this one (edits
        // come in bursts) cancels it before it costs a build.
        tokio::select! {
            () = tokio::time::sleep(BEHIND_QUIET) => self.compare(&token, &fast).await,
            _ = token.cancelled() => {}
        }
        if let Some(file) = &file {
            let still: Vec<String> = adopted::read(file)
                .into_iter()
                .filter(|(id, a)| a.pending && fast.contains(id))
                .map(|(id, _)| id)
                .collect();
            let _ = adopted::remove(file, &still);
        }
    }

    /// The ids of the project's containers now.
    async fn alive(&self) -> Vec<String> {
        self.engine
            .list_project(&self.project)
            .await
            .map(|o| o.into_iter().map(|o| o.id).collect())
            .unwrap_or_default()
    }

    /// Builds, compares and records (or warns).
    async fn compare(&self, token: &CancellationToken, fast: &[String]) {
        let built = tokio::select! {
            b = swap::build(&self.engine, &self.stack, &self.project, &self.service) => b,
            _ = token.cancelled() => return,
        };
        let built = match built {
            Ok(b) => b,
            Err(outcome) => {
                let why = match outcome {
                    swap::Outcome::BuildFailed { message } | swap::Outcome::Failed { message } => {
                        message
                    }
                    other => format!("{other:?}"),
                };
                self.warn(
                    &format!("the build behind the fast swap failed: {why}"),
                    &self.overlay.files,
                );
                return;
            }
        };
        let previous = self
            .last_built
            .lock()
            .ok()
            .and_then(|mut l| l.insert(self.service.clone(), built.image_id.clone()));
        if let Some(prev) = previous.filter(|p| *p != built.image_id && *p != self.base) {
            self.engine.remove_unused_image(&prev).await;
        }
        match self.differences(&built.image_id, fast).await {
            Ok(diffs) if diffs.is_empty() => self.adopt(&built.image_id, fast).await,
            Ok(diffs) => {
                if let Ok(mut d) = self.disabled.lock() {
                    d.insert(self.service.clone());
                }
                self.warn(
                    "the fast swap's containers differ from the real build (a devstack bug: please report it); later saves of this service take the full build",
                    &diffs,
                );
            }
            Err(e) => self.warn(
                &format!("the fast swap could not be compared with the real build: {e}"),
                &self.overlay.files,
            ),
        }
    }

    /// The running containers the fast swap made.
    async fn fast_containers(&self) -> Vec<String> {
        let Some(hash) = &self.fast_hash else {
            return Vec::new();
        };
        let Ok(observed) = self.engine.list_project(&self.project).await else {
            return Vec::new();
        };
        observed
            .into_iter()
            .filter(|o| o.service.as_deref() == Some(&self.service) && o.task.is_none())
            .filter(|o| o.config_hash.as_deref() == Some(hash.as_str()))
            .filter(|o| o.state == ObservedState::Running)
            .map(|o| o.id)
            .collect()
    }

    /// Each placed path (and the image configuration) that differs between
    /// the real build `image` and the fast containers, with how.
    async fn differences(&self, image: &str, fast: &[String]) -> Result<Vec<String>, String> {
        let mut diffs = Vec::new();
        let (want, got) = (
            self.engine.image_config(image).await,
            self.engine.image_config(&self.base).await,
        );
        if want.map_err(|e| e.to_string())? != got.map_err(|e| e.to_string())? {
            diffs.push("the image configuration (CMD, ENV, WORKDIR, ...)".to_string());
        }
        let scratch = self
            .engine
            .scratch_container(image)
            .await
            .map_err(|e| e.to_string())?;
        let result = async {
            let mut paths: Vec<String> = self
                .overlay
                .entries
                .iter()
                .map(|e| e.dest.clone())
                .collect();
            paths.dedup();
            for path in &paths {
                let want = self.listed(&scratch, path).await?;
                for id in fast {
                    let got = self.listed(id, path).await?;
                    if got != want {
                        diffs.push(format!("{path}: build {want:?}, fast {got:?}"));
                        break;
                    }
                }
            }
            Ok::<_, String>(())
        }
        .await;
        let _ = self.engine.remove(&scratch).await;
        result.map(|()| diffs)
    }

    async fn listed(&self, id: &str, path: &str) -> Result<Option<fast::Listed>, String> {
        match self.engine.archive_of(id, path).await {
            Ok(Some(tar)) => fast::listed(&tar),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Records the fast containers as holding the real build `image`.
    async fn adopt(&self, image: &str, fast: &[String]) {
        let (Some(hash), Some(file)) = (
            swap::service_hash(
                &self.engine,
                &self.stack,
                &self.project,
                &self.service,
                image,
            ),
            self.engine.adoption_file(&self.project),
        ) else {
            return;
        };
        let records: BTreeMap<String, Adoption> = fast
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    Adoption {
                        hash: hash.clone(),
                        image: image.to_string(),
                        pending: false,
                    },
                )
            })
            .collect();
        // Only containers that still exist keep a record.
        if let Err(e) = adopted::record(&file, records, &self.alive().await) {
            self.warn(
                &format!("recording the real build for the fast containers: {e}"),
                &self.overlay.files,
            );
        }
    }

    fn warn(&self, message: &str, files: &[String]) {
        if self.json {
            outln!(
                "{}",
                serde_json::json!({
                    "event": "warning",
                    "service": self.service,
                    "message": message,
                    "files": files,
                })
            );
        } else {
            outln!("{}: warning: {message}: {}", self.service, files.join(", "));
        }
    }
}
