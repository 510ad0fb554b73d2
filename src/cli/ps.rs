//! `devstack ps [--json]`: the stack's containers, their state, health and
//! published addresses, gathered by `controller::ps::rows`.

use super::args::{GlobalArgs, PsArgs};
use super::exit;
use super::stack::project_of;
use crate::controller::ps;
use crate::plan::ObservedState;
use crate::ui::{columns, connect};

pub async fn run(global: &GlobalArgs, args: PsArgs) -> anyhow::Result<u8> {
    let (project, loaded) = project_of(global)?;
    let engine = connect().await?;
    crate::controller::agent::adopt_reach(&engine, &project);
    let rows = ps::rows(&engine, &project, loaded.as_ref(), args.probe).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        sayln!("{project}: no containers");
        return Ok(exit::OK);
    }
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let state = match (r.state, r.exit_code) {
                (ObservedState::Exited, Some(code)) => format!("exited ({code})"),
                (s, _) => format!("{s:?}").to_lowercase(),
            };
            let published: Vec<String> = r
                .published
                .iter()
                .map(|p| format!("{}->{}", p.address(), p.container_port))
                .collect();
            let unit = r
                .service
                .clone()
                .or(r.task.as_ref().map(|t| format!("task {t}")));
            [
                r.name.clone(),
                unit.unwrap_or_default(),
                state,
                r.health.clone(),
                published.join(", "),
            ]
        })
        .collect();
    let header = ["NAME", "SERVICE", "STATE", "HEALTH", "PUBLISHED"];
    for line in columns(header, &table) {
        outln!("{line}");
    }
    Ok(exit::OK)
}
