//! `devstack down [--volumes]`: stop and remove the stack's containers and
//! network (and with `--volumes` its named volumes), touching nothing that
//! lacks the project's labels; `controller::down` does it.

use std::io::IsTerminal;

use super::args::{DownArgs, GlobalArgs};
use super::exit;
use super::stack::{duration_arg, project_of};

pub async fn run(global: &GlobalArgs, args: DownArgs) -> anyhow::Result<u8> {
    // `-p NAME` is enough: a CI job can clean up even if the stack file changed.
    let (project, _) = project_of(global)?;
    let grace = match &args.timeout {
        Some(t) => Some(duration_arg("--timeout", t)?),
        None => None,
    };
    let engine = crate::ui::connect().await?;
    let quiet = !std::io::stderr().is_terminal() && std::env::var_os("CI").is_some();
    let removed = move |container: &str| {
        if !quiet {
            sayln!("removed {container}");
        }
    };
    let outcome =
        crate::controller::down::down(&engine, &project, grace, args.volumes, removed).await?;
    if outcome.network {
        sayln!("removed network {project}");
    }
    for v in &outcome.volumes {
        sayln!("removed volume {v}");
    }
    if outcome.containers.is_empty() && !outcome.network && outcome.volumes.is_empty() {
        sayln!("{project}: nothing to remove");
    }
    Ok(exit::OK)
}
