//! `devstack data snapshot|restore|ls|rm|export|import`: parses, calls
//! `engine::snapshot` (a restore: `controller::data::restore`), prints.

use super::args::{DataArgs, DataCommand, GlobalArgs};
use super::exit;
use super::stack::{load_stack, print_restarted, render_mode, use_color};
use crate::controller::data::{self, snapshot_failed as failed, Restore};
use crate::controller::up::UpOptions;
use crate::engine::snapshot;
use crate::ui::{connect, engine_failure};

pub async fn run(global: &GlobalArgs, args: DataArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let (stack, project) = (&loaded.stack, loaded.project.as_str());
    let engine = connect().await?;
    match args.command {
        DataCommand::Snapshot { name, datastores } => {
            let parts = snapshot::take(&engine, stack, project, &name, &datastores)
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
            // Then `up --wait`, which starts the restored datastores again.
            let up = UpOptions::wait(render_mode(false), use_color(global));
            let ask = Restore {
                name: &name,
                datastores: &datastores,
                force,
                up,
            };
            return data::restore(&engine, &loaded, &ask, print_restarted).await;
        }
        DataCommand::Ls { json } => {
            let all = snapshot::list(&engine, project)
                .await
                .map_err(engine_failure)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                let row =
                    |a: &str, b: &str, c: &str, d: &str| outln!("{a:<24} {b:<16} {c:<12} {d}");
                row("SNAPSHOT", "DATASTORE", "TAKEN", "IMAGE");
                for s in &all {
                    row(&s.name, &s.datastore, &s.taken.to_string(), &s.image);
                }
            }
        }
        DataCommand::Export { name, file } => {
            let n = snapshot::export(&engine, stack, project, &name, &file)
                .await
                .map_err(failed)?;
            sayln!(
                "exported snapshot `{name}` ({n} datastore(s)) to {}",
                file.display()
            );
        }
        DataCommand::Import { file } => {
            let name = snapshot::import(&engine, stack, project, &file)
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
