//! `devstack ps [--json]`: the stack's containers, their state, health and
//! published addresses.

use std::time::Duration;

use serde::Serialize;

use super::args::{GlobalArgs, PsArgs};
use super::exit;
use super::stack::project_of;
use crate::engine::containers::Published;
use crate::engine::health::{self, Check};
use crate::plan::{names, ObservedState};
use crate::ui::{connect, engine_failure};

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    service: Option<String>,
    replica: Option<u32>,
    task: Option<String>,
    state: ObservedState,
    exit_code: Option<i64>,
    /// `healthy`, `unhealthy: <what the probe saw>`, or `-` when not running.
    health: String,
    published: Vec<Published>,
    id: String,
}

pub async fn run(global: &GlobalArgs, args: PsArgs) -> anyhow::Result<u8> {
    let (project, loaded) = project_of(global)?;
    let engine = connect().await?;
    let network = names::network_name(&project);
    let observed = engine
        .list_project(&project)
        .await
        .map_err(engine_failure)?;
    // One probe per running container, all at once, with a short timeout: ps
    // should answer in well under a second.
    let rows = futures::future::join_all(observed.iter().map(|o| {
        let engine = &engine;
        let network = &network;
        let loaded = &loaded;
        async move {
            let status = engine.inspect(&o.id, network).await.ok();
            let health = match &status {
                Some(s) if s.state == ObservedState::Running => {
                    let stack_health = loaded
                        .as_ref()
                        .and_then(|l| o.service.as_deref().and_then(|svc| l.stack.unit(svc)))
                        .and_then(|c| c.health.clone());
                    let check = match stack_health {
                        Some(h) => Check::Probe(h),
                        None if s.docker_health.is_some() => Check::Image,
                        None => Check::Running,
                    };
                    match check {
                        Check::Probe(h) => {
                            let r = health::probe(engine, s, &h.probe, Duration::from_millis(800))
                                .await;
                            if r.ok {
                                "healthy".to_string()
                            } else {
                                format!("unhealthy: {}", r.detail)
                            }
                        }
                        Check::Image => s.docker_health.clone().unwrap_or_default(),
                        Check::Running => "running".to_string(),
                    }
                }
                _ => "-".to_string(),
            };
            Row {
                name: o.name.clone(),
                service: o.service.clone(),
                replica: o.replica,
                task: o.task.clone(),
                state: status.as_ref().map(|s| s.state).unwrap_or(o.state),
                exit_code: status
                    .as_ref()
                    .filter(|s| s.state == ObservedState::Exited)
                    .and_then(|s| s.exit_code),
                health,
                published: status.map(|s| s.published).unwrap_or_default(),
                id: o.id.chars().take(12).collect(),
            }
        }
    }))
    .await;
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
            [
                r.name.clone(),
                r.service
                    .clone()
                    .or(r.task.clone().map(|t| format!("task {t}")))
                    .unwrap_or_default(),
                state,
                r.health.clone(),
                published.join(", "),
            ]
        })
        .collect();
    let header = ["NAME", "SERVICE", "STATE", "HEALTH", "PUBLISHED"];
    let mut widths = header.map(str::len);
    for row in &table {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let print = |cells: Vec<&str>| {
        let line: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:w$}", w = widths[i]))
            .collect();
        outln!("{}", line.join("  ").trim_end());
    };
    print(header.to_vec());
    for row in &table {
        print(row.iter().map(String::as_str).collect());
    }
    Ok(exit::OK)
}
