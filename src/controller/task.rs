//! `run TASK` and `exec SERVICE`: the one container a command attaches a
//! terminal to: a task's one-off container (image built or pulled, what it
//! needs prepared), or a running replica of a service.

use super::LoadedStack;
use crate::engine::apply;
use crate::engine::progress::Reporter;
use crate::engine::Engine;
use crate::plan::{self, ContainerSpec, Observed, ObservedState};
use crate::ui::{engine_failure, exit, Failed};

/// The spec of task `task`'s one-off container (its own command, or
/// `command` when given), once its image is there and what it needs
/// prepared; the task is one of the stack's ([`LoadedStack::check_task`]).
pub async fn task_spec(
    engine: &Engine,
    loaded: &LoadedStack,
    task: &str,
    command: &[String],
) -> anyhow::Result<ContainerSpec> {
    let (stack, project) = (&loaded.stack, loaded.project.as_str());
    let silent = Reporter::silent();
    let image = apply::task_image(engine, stack, project, task, &silent)
        .await
        .map_err(engine_failure)?;
    apply::prepare_task(engine, stack, project, task)
        .await
        .map_err(engine_failure)?;
    let suffix = format!("{}", std::process::id());
    let command = (!command.is_empty()).then(|| command.to_vec());
    plan::task_container(stack, project, task, &image, command, &suffix)
        .ok_or_else(|| Failed::new(exit::FAILURE, format!("task `{task}` has no image")).into())
}

/// The running container of replica `replica` (1-based) of `service`.
pub async fn running_replica(
    engine: &Engine,
    project: &str,
    service: &str,
    replica: u32,
) -> anyhow::Result<Observed> {
    let observed = engine.list_project(project).await.map_err(engine_failure)?;
    let Some(container) = plan::replica_container(&observed, service, replica) else {
        return Err(Failed::new(
            exit::FAILURE,
            format!(
                "`{service}` has no replica {replica} in {project} (is the stack up? `devstack ps` lists what runs)"
            ),
        )
        .into());
    };
    if container.state != ObservedState::Running {
        let why = format!(
            "`{}` is not running ({:?})",
            container.name, container.state
        );
        return Err(Failed::new(exit::FAILURE, why.to_lowercase()).into());
    }
    Ok(container.clone())
}
