//! `devstack ls [--json]` and `devstack prune [--older-than D] [--volumes]
//! [--dry-run]`: every devstack project on the engine, and the removal of
//! abandoned ones; the work is `controller::projects`.

use super::args::{GlobalArgs, ListArgs, PruneArgs};
use super::stack::duration_arg;
use crate::controller::projects::{self, ProjectInfo, PruneOptions};
use crate::ui::exit;

pub async fn ls(_global: &GlobalArgs, args: ListArgs) -> anyhow::Result<u8> {
    let engine = crate::ui::connect().await?;
    let found = projects::list(&engine).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(exit::OK);
    }
    if found.is_empty() {
        sayln!("no devstack projects on this engine");
        return Ok(exit::OK);
    }
    outln!(
        "{:<32} {:<10} {:>8} {:<6} {:>10}",
        "PROJECT",
        "STATE",
        "AGE",
        "AGENT",
        "CONTAINERS"
    );
    for p in &found {
        outln!(
            "{:<32} {:<10} {:>8} {:<6} {:>10}",
            p.project,
            p.state.as_str(),
            p.age_seconds.map(age).unwrap_or_else(|| "-".into()),
            if p.agent { "yes" } else { "no" },
            format!("{}/{}", p.running, p.containers.len())
        );
    }
    Ok(exit::OK)
}

pub async fn prune(_global: &GlobalArgs, args: PruneArgs) -> anyhow::Result<u8> {
    let engine = crate::ui::connect().await?;
    let options = PruneOptions {
        older_than: args
            .older_than
            .as_deref()
            .map(|d| duration_arg("--older-than", d))
            .transpose()?,
        volumes: args.volumes,
        dry_run: args.dry_run,
    };
    let verb = if options.dry_run {
        "would remove"
    } else {
        "removing"
    };
    let each = |p: &ProjectInfo| {
        let volumes = if options.volumes || p.test {
            format!(", {} volume(s)", p.volumes.len())
        } else {
            String::new()
        };
        outln!(
            "{verb} {} (abandoned{}; {} container(s){volumes})",
            p.project,
            p.owner
                .map(|pid| format!(" by process {pid}"))
                .unwrap_or_default(),
            p.containers.len()
        );
    };
    let removed = projects::prune(&engine, &options, each).await?;
    if removed.is_empty() {
        sayln!("nothing to prune");
    }
    Ok(exit::OK)
}

/// `42s`, `5m`, `3h`, `2d`.
fn age(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
