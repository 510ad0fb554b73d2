//! Loading the stack named on the command line, for every subcommand that needs one.

use std::path::PathBuf;

use super::args::GlobalArgs;
use super::{exit, Reported};
use crate::spec::diagnostic::stderr_color;
use crate::spec::{self, LoadOptions, Report, Stack};

/// A valid stack, with the name its Docker objects are labelled with.
#[derive(Debug, Clone)]
pub struct LoadedStack {
    pub stack: Stack,
    /// The project name: `--project-name`, `DEVSTACK_PROJECT_NAME`, or the stack's name.
    pub project: String,
    /// The stack files, in merge order.
    pub files: Vec<PathBuf>,
}

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
    let files = stack_files(global);
    let stack = spec::load(&LoadOptions::new(files.clone()))?;
    let project = match &global.project_name {
        Some(name) => name.clone(),
        None => stack.name.clone(),
    };
    Ok(LoadedStack {
        stack,
        project,
        files,
    })
}

/// Loads and validates the stack files named by `-f` (default `devstack.yaml`).
/// On invalid input the report is printed here and the error is
/// [`Reported`], so callers just return it.
pub fn load_stack(global: &GlobalArgs) -> anyhow::Result<LoadedStack> {
    let loaded = try_load(global).map_err(|report| {
        eprint!("{}", report.render(stderr_color(global.no_color)));
        anyhow::Error::new(Reported(exit::FAILURE))
    })?;
    check_project_name(&loaded.project)?;
    Ok(loaded)
}

/// A project name ends up in container, network and volume names, so it
/// follows the same rule as the names in a stack file.
fn check_project_name(name: &str) -> anyhow::Result<()> {
    crate::spec::decode::check_name(name)
        .map_err(|why| super::Failed::new(exit::USAGE, format!("project name: {why}")).into())
}
