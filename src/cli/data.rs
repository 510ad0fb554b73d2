//! `devstack data snapshot|restore|ls|rm|export|import`: parses, calls
//! `engine::snapshot`, prints. A restore then runs `up --wait`, which
//! starts the restored datastores again, and restarts their dependents.

use super::args::{DataArgs, DataCommand, GlobalArgs, RestartArgs, UpArgs};
use super::stack::load_stack;
use super::{exit, Failed};
use crate::engine::snapshot::{self, SnapshotError};
use crate::ui::{connect, engine_failure};

fn failed(e: SnapshotError) -> anyhow::Error {
    match e {
        SnapshotError::Refused(m) => Failed::new(exit::FAILURE, m).into(),
        SnapshotError::Engine(e) => engine_failure(e),
    }
}

pub async fn run(global: &GlobalArgs, args: DataArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let project = loaded.project.as_str();
    let engine = connect().await?;
    match args.command {
        DataCommand::Snapshot { name, datastores } => {
            let parts = snapshot::take(&engine, &loaded.stack, project, &name, &datastores)
                .await
                .map_err(failed)?;
            for (p, copy) in &parts {
                sayln!(
                    "{}: copied into {} ({})",
                    p.datastore,
                    p.volume,
                    copy.describe()
                );
            }
            sayln!("snapshot `{name}` taken ({} datastore(s))", parts.len());
        }
        DataCommand::Restore {
            name,
            datastores,
            force,
        } => {
            let restored =
                snapshot::restore(&engine, &loaded.stack, project, &name, &datastores, force)
                    .await
                    .map_err(failed)?;
            for (ds, copy) in &restored {
                sayln!("{ds}: {}", copy.describe());
            }
            let restored: Vec<String> = restored.into_iter().map(|(ds, _)| ds).collect();
            sayln!("restored {} from snapshot `{name}`", restored.join(", "));
            let up = UpArgs {
                services: Vec::new(),
                detach: false,
                wait: true,
                timeout: "120s".into(),
                json: false,
                from_snapshot: None,
            };
            let code = super::up::run(global, up).await?;
            if code != exit::OK {
                return Ok(code);
            }
            let dependents: Vec<String> = loaded
                .stack
                .units()
                .filter(|(_, _, c)| c.depends_on.iter().any(|d| restored.contains(d)))
                .map(|(n, _, _)| n.to_string())
                .collect();
            if !dependents.is_empty() {
                return super::restart::run(
                    global,
                    RestartArgs {
                        services: dependents,
                    },
                )
                .await;
            }
        }
        DataCommand::Ls { json } => {
            let all = snapshot::list(&engine, project)
                .await
                .map_err(engine_failure)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                outln!(
                    "{:<24} {:<16} {:<12} IMAGE",
                    "SNAPSHOT",
                    "DATASTORE",
                    "TAKEN"
                );
                for s in &all {
                    outln!(
                        "{:<24} {:<16} {:<12} {}",
                        s.name,
                        s.datastore,
                        s.taken,
                        s.image
                    );
                }
            }
        }
        DataCommand::Export { name, file } => {
            let n = snapshot::export(&engine, &loaded.stack, project, &name, &file)
                .await
                .map_err(failed)?;
            sayln!(
                "exported snapshot `{name}` ({n} datastore(s)) to {}",
                file.display()
            );
        }
        DataCommand::Import { file } => {
            let name = snapshot::import(&engine, &loaded.stack, project, &file)
                .await
                .map_err(failed)?;
            sayln!("imported snapshot `{name}`; `devstack data restore {name}` puts it in place");
        }
        DataCommand::Rm { name } => {
            let n = snapshot::remove(&engine, project, &name)
                .await
                .map_err(failed)?;
            sayln!("removed snapshot `{name}` ({n} volumes)");
        }
    }
    Ok(exit::OK)
}
