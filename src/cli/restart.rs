//! `devstack restart [SERVICE...]`: restart containers (SIGTERM, grace, start)
//! in dependency order and wait for each to be healthy again; the work is
//! `controller::restart`.

use super::args::{GlobalArgs, RestartArgs};
use super::exit;
use super::stack::{check_units, load_stack, print_restarted};
use crate::controller::restart::restart;
use crate::ui::connect;

pub async fn run(global: &GlobalArgs, args: RestartArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    check_units(&loaded, &args.services)?;
    let engine = connect().await?;
    crate::controller::agent::adopt_reach(&engine, &loaded.project);
    let healthy = restart(&engine, &loaded, &args.services, print_restarted).await?;
    Ok(if healthy { exit::OK } else { exit::UNHEALTHY })
}
