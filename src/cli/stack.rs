//! What the subcommands share: the stack named on the command line loaded
//! (through `controller::LoadedStack`), colour, and duration flags.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use super::args::GlobalArgs;
use super::{exit, Failed, Reported};
use crate::controller::restart::Restarted;
use crate::controller::LoadedStack;
use crate::plan::names::ProjectName;
use crate::spec::diagnostic::stderr_color;
use crate::spec::Report;
use crate::ui::progress::Render;

/// The stack files named by `-f`, or `devstack.yaml`.
pub fn stack_files(global: &GlobalArgs) -> Vec<PathBuf> {
    if global.files.is_empty() {
        vec![PathBuf::from("devstack.yaml")]
    } else {
        global.files.clone()
    }
}

/// Loads the stack, returning the report of problems when it is invalid.
pub fn try_load(global: &GlobalArgs) -> Result<LoadedStack, Report> {
    let loaded = LoadedStack::load(stack_files(global), global.project_name.as_ref())?;
    // What an imported Compose file or manifest left out, said once per load.
    for line in &loaded.notes {
        sayln!("{line}");
    }
    Ok(loaded)
}

/// Loads and validates the stack files named by `-f` (default `devstack.yaml`).
/// On invalid input the report is printed here and the error is
/// [`Reported`], so callers just return it.
pub fn load_stack(global: &GlobalArgs) -> anyhow::Result<LoadedStack> {
    try_load(global).map_err(|report| {
        say!("{}", report.render(stderr_color(global.no_color)));
        anyhow::Error::new(Reported(exit::FAILURE))
    })
}

/// Loads the stack, or (for commands that only need the project) settles for
/// `-p` when the stack file cannot be read.
pub fn project_of(global: &GlobalArgs) -> anyhow::Result<(ProjectName, Option<LoadedStack>)> {
    if let Some(project) = &global.project_name {
        let loaded = try_load(global).ok();
        return Ok((project.clone(), loaded));
    }
    let loaded = load_stack(global)?;
    Ok((loaded.project.clone(), Some(loaded)))
}

/// Colour only on a terminal, and never with `--no-color` or `NO_COLOR`.
pub fn use_color(global: &GlobalArgs) -> bool {
    !global.no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

/// How progress shows: JSON events, bars on a terminal, else plain lines.
pub fn render_mode(json: bool) -> Render {
    if json {
        Render::Json
    } else if std::io::stderr().is_terminal() {
        Render::Bars
    } else {
        Render::Plain
    }
}

/// The units named on the command line are the stack's (a usage error if not).
pub fn check_units(loaded: &LoadedStack, names: &[String]) -> anyhow::Result<()> {
    loaded
        .check_units(names)
        .map_err(|why| Failed::new(exit::USAGE, why).into())
}

/// Parses a duration flag (`120s`, `1m30s`, `500ms`).
pub fn duration_arg(flag: &str, text: &str) -> anyhow::Result<Duration> {
    crate::spec::units::parse_duration(text)
        .map_err(|e| Failed::new(exit::USAGE, format!("{flag}: {e}")).into())
}

/// One container's restart (`restart`, `data restore`): how soon it was
/// healthy, or why not and its last lines.
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
