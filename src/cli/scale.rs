//! `devstack scale SERVICE=N...`: add or remove replicas and wait for the new
//! ones to be healthy; the work is `controller::scale`.

use super::args::{GlobalArgs, ScaleArgs};
use super::stack::{load_stack, render_mode, use_color};
use super::{exit, Failed};
use crate::controller::scale::{parse_assignments, scale};
use crate::ui::connect;

pub async fn run(global: &GlobalArgs, args: ScaleArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let replicas = parse_assignments(&args.assignments, |s| loaded.stack.unit(s).is_some())
        .map_err(|e| Failed::new(exit::USAGE, e))?;
    let engine = connect().await?;
    crate::controller::agent::adopt_reach(&engine, &loaded.project);
    scale(
        &engine,
        &loaded,
        replicas,
        render_mode(false),
        use_color(global),
    )
    .await
}
