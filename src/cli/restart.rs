//! `devstack restart [SERVICE...]`: restart containers (SIGTERM, grace, start)
//! in dependency order and wait for each to be healthy again.

use super::args::{GlobalArgs, RestartArgs};
use super::stack::load_stack;
use super::{exit, Failed};
use crate::controller::restart;
use crate::plan;
use crate::ui::connect;

pub async fn run(global: &GlobalArgs, args: RestartArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let stack = &loaded.stack;
    for s in &args.services {
        if stack.unit(s).is_none() {
            let hint = plan::graph::suggest(s, stack.units().map(|(n, _, _)| n));
            return Err(Failed::new(
                exit::USAGE,
                format!("`{s}` is not a service or datastore of this stack{hint}"),
            )
            .into());
        }
    }
    let engine = connect().await?;
    let mut failed = false;
    restart::restart(&engine, &loaded, &args.services, |r| match &r.outcome {
        Ok(took) => sayln!(
            "{}: restarted, healthy in {:.2}s",
            r.name,
            took.as_secs_f64()
        ),
        Err(why) => {
            failed = true;
            sayln!("{}: restarted but {why}", r.name);
            for line in &r.last_lines {
                sayln!("  | {line}");
            }
        }
    })
    .await?;
    Ok(if failed { exit::UNHEALTHY } else { exit::OK })
}
