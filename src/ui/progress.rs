//! Progress of `apply::up` as the user sees it (spinners, plain lines or
//! JSON), and the table and failure report that follow it.

use std::collections::BTreeMap;
use std::time::Duration;

use console::Style;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::service_style;
use crate::engine::apply::{UnitState, UpOutcome};
use crate::engine::progress::Progress;
use crate::router::served;
use crate::spec::Stack;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// One JSON object per event on stdout.
    Json,
    /// A spinner per unit on stderr (a terminal).
    Bars,
    /// One plain line per event on stderr.
    Plain,
}

/// Shows every progress event until the reporter is dropped.
pub async fn render(mut rx: mpsc::UnboundedReceiver<Progress>, mode: Render, color: bool) {
    let multi = MultiProgress::new();
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let spinner = ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    while let Some(event) = rx.recv().await {
        match mode {
            Render::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    outln!("{line}");
                }
            }
            Render::Plain => {
                if let Some(line) = plain_line(&event) {
                    sayln!("{line}");
                }
            }
            Render::Bars => {
                let Some(service) = service_of(&event) else {
                    if let Some(line) = plain_line(&event) {
                        let _ = multi.println(line);
                    }
                    continue;
                };
                let bar = bars.entry(service.clone()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(spinner.clone());
                    bar.set_prefix(
                        service_style(&service, color)
                            .apply_to(service.clone())
                            .to_string(),
                    );
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                match &event {
                    Progress::Healthy { millis, .. } => {
                        bar.finish_with_message(format!(
                            "healthy ({:.1}s)",
                            *millis as f64 / 1000.0
                        ));
                    }
                    Progress::Failed { reason, .. } => {
                        bar.finish_with_message(format!("FAILED: {reason}"))
                    }
                    Progress::Blocked { by, .. } => {
                        bar.finish_with_message(format!("not started: `{by}` failed"))
                    }
                    other => {
                        if let Some(message) = bar_message(other) {
                            bar.set_message(message);
                        }
                    }
                }
            }
        }
    }
    for bar in bars.values() {
        if !bar.is_finished() {
            bar.abandon();
        }
    }
}

fn service_of(event: &Progress) -> Option<String> {
    match event {
        Progress::BuildStarted { service, .. }
        | Progress::BuildOutput { service, .. }
        | Progress::Built { service, .. }
        | Progress::BuildCurrent { service, .. }
        | Progress::Pull { service, .. }
        | Progress::Waiting { service, .. }
        | Progress::Probe { service, .. }
        | Progress::Ready { service, .. }
        | Progress::Healthy { service, .. }
        | Progress::Failed { service, .. }
        | Progress::Blocked { service, .. } => Some(service.clone()),
        Progress::Container { service, .. } if !service.is_empty() => Some(service.clone()),
        Progress::Task { before, .. } => Some(before.clone()),
        _ => None,
    }
}

fn bar_message(event: &Progress) -> Option<String> {
    Some(match event {
        Progress::BuildStarted { tag, .. } => format!("building {tag}"),
        Progress::BuildOutput { line, .. } => format!("building: {line}"),
        Progress::Built { millis, .. } => format!("built in {:.1}s", *millis as f64 / 1000.0),
        Progress::BuildCurrent { .. } => "image current: build inputs unchanged".into(),
        Progress::Pull { status, layer, .. } => match layer {
            Some(l) => format!("pulling {l}: {status}"),
            None => format!("pulling: {status}"),
        },
        Progress::Waiting { on, .. } => format!("waiting for {}", on.join(", ")),
        Progress::Task { task, state, .. } => format!("task {task}: {state}"),
        Progress::Container {
            container,
            action,
            reason,
            ..
        } => match reason {
            Some(r) => format!("{action} {container} ({r})"),
            None => format!("{action} {container}"),
        },
        Progress::Probe { detail, .. } => format!("waiting for health: {detail}"),
        Progress::Ready { container, .. } => format!("{container} ready"),
        _ => return None,
    })
}

fn plain_line(event: &Progress) -> Option<String> {
    Some(match event {
        Progress::BuildStarted { service, tag } => format!("{service}: building {tag}"),
        Progress::BuildOutput { service, line } => format!("{service} | {line}"),
        Progress::Built {
            service, millis, ..
        } => {
            format!("{service}: built in {:.1}s", *millis as f64 / 1000.0)
        }
        Progress::BuildCurrent { service, .. } => {
            format!("{service}: image current (build inputs unchanged), not rebuilt")
        }
        Progress::Pull {
            service,
            image,
            layer,
            status,
        } => match layer {
            Some(l) => format!("{service}: pulling {image} {l}: {status}"),
            None => format!("{service}: pulling {image}: {status}"),
        },
        Progress::Created { object, name } => format!("created {object} {name}"),
        Progress::Reach {
            reach,
            decided,
            registry,
        } => format!(
            "reaching containers through {}{}{}",
            reach.describe(),
            if *decided {
                ""
            } else {
                " (presumed: not probed)"
            },
            registry
                .map(|r| format!("; the registry runs {}", r.describe()))
                .unwrap_or_default()
        ),
        Progress::Waiting { service, on } => format!("{service}: waiting for {}", on.join(", ")),
        Progress::Task {
            task,
            before,
            state,
            exit_code,
        } => match exit_code {
            Some(code) => format!("{before}: task {task} {state} (exit {code})"),
            None => format!("{before}: task {task} {state}"),
        },
        Progress::Container {
            service,
            container,
            action,
            reason,
        } => {
            let who = if service.is_empty() {
                container.clone()
            } else {
                format!("{service}: {action} {container}")
            };
            let who = if service.is_empty() {
                format!("{action} {who}")
            } else {
                who
            };
            match reason {
                Some(r) => format!("{who} ({r})"),
                None => who,
            }
        }
        Progress::Probe {
            container, detail, ..
        } => format!("{container}: waiting for health: {detail}"),
        Progress::Ready { .. } => return None,
        Progress::Healthy { service, millis } => {
            format!("{service}: healthy ({:.2}s)", *millis as f64 / 1000.0)
        }
        Progress::Failed { service, reason } => format!("{service}: FAILED: {reason}"),
        Progress::Blocked { service, by } => format!("{service}: not started: `{by}` failed"),
        Progress::Stopped { container, removed } => {
            format!(
                "{} {container}",
                if *removed { "removed" } else { "stopped" }
            )
        }
    })
}

/// The table after a successful `up`: service, replicas, state, published
/// addresses and route URLs.
/// `routing`: `None` when no routing path runs (no URL is shown), else the
/// URLs the proxy did not serve (left out).
pub fn print_table(stack: &Stack, outcome: &UpOutcome, routing: Option<&[String]>, color: bool) {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for unit in &outcome.units {
        let state = match &unit.state {
            UnitState::Healthy => "healthy".to_string(),
            UnitState::Failed { .. } => "FAILED".to_string(),
            UnitState::Blocked { by } => format!("not started ({by} failed)"),
        };
        let published: Vec<String> = unit
            .containers
            .iter()
            .flat_map(|c| {
                c.published
                    .iter()
                    .map(|p| format!("{}->{}", p.address(), p.container_port))
            })
            .collect();
        // A URL is shown only when the proxy serves it.
        let urls = served::urls(stack, &unit.service);
        let routes = match (routing, &unit.state) {
            (Some(unserved), UnitState::Healthy) => {
                urls.into_iter().filter(|u| !unserved.contains(u)).collect()
            }
            (None, _) if !urls.is_empty() => vec!["(routing is off)".to_string()],
            _ => Vec::new(),
        };
        rows.push([
            unit.service.clone(),
            format!("{}/{}", unit.containers.len(), unit.replicas),
            state,
            published.join(", "),
            routes.join(" "),
        ]);
    }
    let header = ["SERVICE", "REPLICAS", "STATE", "PUBLISHED", "ROUTES"];
    let lines = super::columns(header, &rows);
    let bold = if color {
        Style::new().bold().force_styling(true)
    } else {
        Style::new()
    };
    outln!("{}", bold.apply_to(&lines[0]));
    for (row, text) in rows.iter().zip(&lines[1..]) {
        let style = match outcome
            .units
            .iter()
            .find(|u| u.service == row[0])
            .map(|u| &u.state)
        {
            Some(UnitState::Healthy) | None => Style::new(),
            Some(_) if color => Style::new().red().force_styling(true),
            Some(_) => Style::new(),
        };
        outln!("{}", style.apply_to(text));
    }
    outln!(
        "{} {} ({:.2}s)",
        outcome.project,
        if outcome.all_healthy() {
            "is up"
        } else {
            "is not healthy"
        },
        outcome.millis as f64 / 1000.0
    );
}

/// For each unit that is not healthy: why, the last health output and its
/// last log lines.
pub fn print_failures(outcome: &UpOutcome, color: bool) {
    let red = if color {
        Style::new().red().bold().force_styling(true)
    } else {
        Style::new()
    };
    for unit in &outcome.units {
        match &unit.state {
            UnitState::Healthy => {}
            UnitState::Blocked { by } => {
                sayln!(
                    "{} {}: not started because `{by}` is not healthy",
                    red.apply_to("✗"),
                    unit.service
                );
            }
            UnitState::Failed {
                reason,
                container,
                last_health,
                logs,
            } => {
                sayln!("{} {}: {reason}", red.apply_to("✗"), unit.service);
                if let Some(h) = last_health {
                    sayln!("  last health check: {h}");
                }
                if !logs.is_empty() {
                    sayln!(
                        "  last {} log lines of {}:",
                        logs.len(),
                        container.as_deref().unwrap_or(&unit.service)
                    );
                    for l in logs {
                        sayln!("  | {l}");
                    }
                }
            }
        }
    }
}
