//! Every devstack project on the engine (`devstack ls`) and the removal of
//! the abandoned ones (`devstack prune`). A project is what carries the
//! project label; it is *abandoned* when its network names an owner
//! (a `devstack test` copy) and that process is gone. A developer's own
//! stack has no owner and is never abandoned: prune leaves it alone.

use std::time::Duration;

use serde::Serialize;

use super::state;
use crate::engine::projects::ProjectObjects;
use crate::engine::unix_now;
use crate::engine::Engine;
use crate::plan::names::ProjectName;
use crate::process::ProcessIdentity;
use crate::ui::engine_failure;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectState {
    /// At least one container runs.
    Running,
    /// Nothing runs (containers stopped, or only a network or volumes left).
    Stopped,
    /// Its owner is gone: a `devstack test` killed before it took its copy down.
    Abandoned,
}

impl ProjectState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectState::Running => "running",
            ProjectState::Stopped => "stopped",
            ProjectState::Abandoned => "abandoned",
        }
    }
}

/// One project, as `devstack ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectInfo {
    pub project: String,
    pub state: ProjectState,
    /// Seconds since its oldest object was made.
    pub age_seconds: Option<i64>,
    /// Whether its routing agent (or a foreground `up`) runs.
    pub agent: bool,
    /// A `devstack test` copy (its volumes are scratch).
    pub test: bool,
    /// The pid of the owner its network names.
    pub owner: Option<u32>,
    pub containers: Vec<String>,
    pub running: usize,
    pub network: Option<String>,
    pub volumes: Vec<String>,
}

/// Every project on the engine, by name.
pub async fn list(engine: &Engine) -> anyhow::Result<Vec<ProjectInfo>> {
    let found = engine.devstack_projects().await.map_err(engine_failure)?;
    let now = unix_now();
    Ok(found.into_iter().map(|p| judge(p, now)).collect())
}

fn judge(p: ProjectObjects, now: i64) -> ProjectInfo {
    let name = ProjectName::new(&p.project).ok();
    let owner = match (&name, &p.owner) {
        (Some(name), Some(label)) => ProcessIdentity::from_label(label, name),
        _ => None,
    };
    // A label devstack did not write (or a name it could not have made)
    // is not judged: such a project is never abandoned.
    let abandoned = owner.as_ref().is_some_and(|o| !o.is_running());
    let agent = name
        .as_ref()
        .is_some_and(|n| matches!(state::read(n), Ok(Some(_))));
    let state = if abandoned {
        ProjectState::Abandoned
    } else if p.running > 0 {
        ProjectState::Running
    } else {
        ProjectState::Stopped
    };
    ProjectInfo {
        project: p.project,
        state,
        age_seconds: p.created.map(|c| (now - c).max(0)),
        agent,
        test: p.test,
        owner: owner.map(|o| o.pid),
        containers: p.containers,
        running: p.running,
        network: p.network,
        volumes: p.volumes,
    }
}

/// What `devstack prune` was asked.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Only projects at least this old.
    pub older_than: Option<Duration>,
    /// Remove their named volumes too (a test copy's always go).
    pub volumes: bool,
    /// Say what would go; remove nothing.
    pub dry_run: bool,
}

/// Removes the abandoned projects (agent, containers, network, state;
/// volumes as [`PruneOptions`] says) and returns them. `each` is told each
/// one before it goes.
pub async fn prune(
    engine: &Engine,
    options: &PruneOptions,
    each: impl Fn(&ProjectInfo),
) -> anyhow::Result<Vec<ProjectInfo>> {
    let chosen: Vec<ProjectInfo> = list(engine)
        .await?
        .into_iter()
        .filter(|p| p.state == ProjectState::Abandoned)
        .filter(|p| match options.older_than {
            Some(min) => p
                .age_seconds
                .is_some_and(|age| age >= i64::try_from(min.as_secs()).unwrap_or(i64::MAX)),
            None => true,
        })
        .collect();
    for p in &chosen {
        each(p);
        if options.dry_run {
            continue;
        }
        let Ok(name) = ProjectName::new(&p.project) else {
            continue;
        };
        super::down::down(engine, &name, None, options.volumes || p.test, |_| {}).await?;
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessIdentity;

    fn objects(owner: Option<String>, running: usize) -> ProjectObjects {
        ProjectObjects {
            project: "shop-test-abc".into(),
            containers: vec!["shop-test-abc-web-1".into()],
            running,
            network: Some("shop-test-abc".into()),
            created: Some(100),
            owner,
            test: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_copy_whose_owner_is_gone_is_abandoned_and_one_whose_owner_runs_is_not() {
        let name = ProjectName::new("shop-test-abc").expect("a name");
        let me = ProcessIdentity::current(&name);
        let live = judge(objects(Some(me.label()), 1), 160);
        assert_eq!(live.state, ProjectState::Running);
        assert_eq!(live.age_seconds, Some(60));
        // This process with another start time: a later process that got the pid.
        let gone = format!("{}:{}", me.pid, me.start_time.unwrap_or(0) + 1);
        assert_eq!(
            judge(objects(Some(gone), 1), 160).state,
            ProjectState::Abandoned
        );
        // No owner (a developer's stack) or one devstack did not write: never abandoned.
        assert_eq!(judge(objects(None, 0), 160).state, ProjectState::Stopped);
        assert_eq!(
            judge(objects(Some("someone".into()), 0), 160).state,
            ProjectState::Stopped
        );
    }
}
