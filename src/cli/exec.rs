//! `devstack exec SERVICE [--replica N] -- CMD...`: a command in a running
//! container (found by `controller::task`), on this terminal (a TTY when
//! stdin is one), exit code passed through.

use super::args::{ExecArgs, GlobalArgs};
use super::stack::{check_units, project_of};
use crate::controller::task::running_replica;
use crate::ui::terminal::{exit_code, terminal_attach, RawMode};
use crate::ui::{connect, engine_failure};

pub async fn run(global: &GlobalArgs, args: ExecArgs) -> anyhow::Result<u8> {
    let (project, loaded) = project_of(global)?;
    if let Some(loaded) = &loaded {
        check_units(loaded, std::slice::from_ref(&args.service))?;
    }
    let engine = connect().await?;
    let container = running_replica(&engine, &project, &args.service, args.replica).await?;
    let attach = terminal_attach();
    let _raw = if attach.tty { RawMode::enable() } else { None };
    let code = engine
        .exec_attached(&container.id, &args.command, attach)
        .await
        .map_err(engine_failure)?;
    Ok(exit_code(code))
}
