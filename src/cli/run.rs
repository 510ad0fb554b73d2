//! `devstack run TASK [-- CMD...]`: a one-off container with the service's
//! image, environment and network, removed afterwards, exit code passed
//! through; `controller::task` makes its spec.

use super::args::{GlobalArgs, RunArgs};
use super::stack::load_stack;
use super::{exit, Failed};
use crate::controller::task::task_spec;
use crate::ui::terminal::{exit_code, terminal_attach, RawMode};
use crate::ui::{connect, engine_failure};

pub async fn run(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    loaded
        .check_task(&args.task)
        .map_err(|why| Failed::new(exit::USAGE, why))?;
    let engine = connect().await?;
    let spec = task_spec(&engine, &loaded, &args.task, &args.command).await?;
    let attach = terminal_attach();
    let _raw = if attach.tty { RawMode::enable() } else { None };
    let code = engine
        .run_attached(&spec, attach)
        .await
        .map_err(engine_failure)?;
    Ok(exit_code(code))
}
