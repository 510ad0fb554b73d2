//! `devstack restart [SERVICE...]`: restart containers (SIGTERM, grace, start)
//! in dependency order and wait for each to be healthy again; the work is
//! `controller::restart`.

use super::args::{GlobalArgs, RestartArgs};
use super::exit;
use super::stack::{check_units, load_stack};
use crate::controller::restart::{restart, Restarted};
use crate::ui::connect;

pub async fn run(global: &GlobalArgs, args: RestartArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    check_units(&loaded, &args.services)?;
    let engine = connect().await?;
    let healthy = restart(&engine, &loaded, &args.services, print_restarted).await?;
    Ok(if healthy { exit::OK } else { exit::UNHEALTHY })
}

/// One container's restart: how soon it was healthy, or why not and its last lines.
pub fn print_restarted(r: &Restarted) {
    match &r.outcome {
        Ok(took) => sayln!(
            "{}: restarted, healthy in {:.2}s",
            r.name,
            took.as_secs_f64()
        ),
        Err(why) => {
            sayln!("{}: restarted but {why}", r.name);
            for line in &r.last_lines {
                sayln!("  | {line}");
            }
        }
    }
}
