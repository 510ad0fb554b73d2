//! `devstack exec SERVICE [--replica N] -- CMD...`: a command in a running
//! container, on this terminal (a TTY when stdin is one), exit code passed through.

use super::args::{ExecArgs, GlobalArgs};
use super::stack::{check_units, project_of};
use super::{exit, Failed};
use crate::plan::ObservedState;
use crate::ui::terminal::{exit_code, terminal_attach, RawMode};
use crate::ui::{connect, engine_failure};

pub async fn run(global: &GlobalArgs, args: ExecArgs) -> anyhow::Result<u8> {
    let (project, loaded) = project_of(global)?;
    if let Some(loaded) = &loaded {
        check_units(loaded, std::slice::from_ref(&args.service))?;
    }
    let engine = connect().await?;
    let observed = engine
        .list_project(&project)
        .await
        .map_err(engine_failure)?;
    let container = crate::plan::replica_container(&observed, &args.service, args.replica);
    let Some(container) = container else {
        return Err(Failed::new(
            exit::FAILURE,
            format!(
                "`{}` has no replica {} in {project} (is the stack up? `devstack ps` lists what runs)",
                args.service, args.replica
            ),
        )
        .into());
    };
    if container.state != ObservedState::Running {
        return Err(Failed::new(
            exit::FAILURE,
            format!(
                "`{}` is not running ({:?})",
                container.name, container.state
            )
            .to_lowercase(),
        )
        .into());
    }
    let attach = terminal_attach();
    let _raw = if attach.tty { RawMode::enable() } else { None };
    let code = engine
        .exec_attached(&container.id, &args.command, attach)
        .await
        .map_err(engine_failure)?;
    Ok(exit_code(code))
}
