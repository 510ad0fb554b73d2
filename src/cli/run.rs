//! `devstack run TASK [-- CMD...]`: a one-off container with the service's
//! image, environment and network, removed afterwards, exit code passed through.

use super::args::{GlobalArgs, RunArgs};
use super::stack::load_stack;
use super::{exit, Failed};
use crate::engine::apply;
use crate::engine::progress::Reporter;
use crate::plan::{self, PlanError};
use crate::ui::terminal::{exit_code, terminal_attach, RawMode};
use crate::ui::{connect, engine_failure};

pub async fn run(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let stack = &loaded.stack;
    if !stack.tasks.contains_key(&args.task) {
        let hint = plan::graph::suggest(&args.task, stack.tasks.keys().map(String::as_str));
        return Err(Failed::new(
            exit::USAGE,
            PlanError::UnknownTask {
                name: args.task.clone(),
                hint,
            }
            .to_string(),
        )
        .into());
    }
    let engine = connect().await?;
    let image = apply::task_image(
        &engine,
        stack,
        &loaded.project,
        &args.task,
        &Reporter::silent(),
    )
    .await
    .map_err(engine_failure)?;
    apply::prepare_task(&engine, stack, &loaded.project, &args.task)
        .await
        .map_err(engine_failure)?;
    let suffix = format!("{}", std::process::id());
    let command = if args.command.is_empty() {
        None
    } else {
        Some(args.command.clone())
    };
    let Some(spec) =
        plan::task_container(stack, &loaded.project, &args.task, &image, command, &suffix)
    else {
        return Err(
            Failed::new(exit::FAILURE, format!("task `{}` has no image", args.task)).into(),
        );
    };
    let attach = terminal_attach();
    let _raw = if attach.tty { RawMode::enable() } else { None };
    let code = engine
        .run_attached(&spec, attach)
        .await
        .map_err(engine_failure)?;
    Ok(exit_code(code))
}
