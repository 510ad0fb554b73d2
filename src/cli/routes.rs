//! `devstack routes [--json]`: the routes the proxy serves and the live
//! instances behind them, read from the registry (etcd) of the running stack
//! by `controller::registry::routes`.

use super::args::{GlobalArgs, RoutesArgs};
use super::exit;
use super::stack::load_stack;
use crate::controller::registry;

pub async fn run(global: &GlobalArgs, args: RoutesArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let routes = registry::routes(&loaded).await?;
    if args.json {
        // Through a JSON value, whose keys are sorted.
        let value = serde_json::to_value(&routes)?;
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(exit::OK);
    }
    outln!("{:<48} {:<16} INSTANCES", "ROUTE", "SERVICE");
    for r in &routes.routes {
        let list = if r.instances.is_empty() {
            "none (503)".to_string()
        } else {
            let at: Vec<String> = r
                .instances
                .iter()
                .map(|i| format!("{}:{}", i.address, i.port))
                .collect();
            at.join(", ")
        };
        outln!("{:<48} {:<16} {list}", r.url, r.service);
    }
    Ok(exit::OK)
}
