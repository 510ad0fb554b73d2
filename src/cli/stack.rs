//! Loading the stack named on the command line, for every subcommand that needs one.

use std::path::PathBuf;

use super::args::GlobalArgs;
use super::{exit, Reported};
use crate::plan::names::ProjectName;
use crate::spec::diagnostic::stderr_color;
use crate::spec::{self, LoadOptions, Problem, Report, Stack};

/// A valid stack, with the name its Docker objects are labelled with.
#[derive(Debug, Clone)]
pub struct LoadedStack {
    pub stack: Stack,
    /// The project name: `--project-name`, `DEVSTACK_PROJECT_NAME`, or the stack's name.
    pub project: ProjectName,
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
    let loaded = spec::load_with_notes(&LoadOptions::new(files.clone()))?;
    // What an imported Compose file or manifest left out, said once per load.
    for line in crate::import::report::render_all(&loaded.notes, &loaded.sources) {
        sayln!("{line}");
    }
    let stack = loaded.stack;
    // `-p` was checked as it was parsed; the stack's name by `spec`, with
    // the same rule, so this only fails if the two rules ever part.
    let project = match &global.project_name {
        Some(name) => name.clone(),
        None => ProjectName::new(&stack.name).map_err(|why| Report {
            sources: Default::default(),
            problems: vec![Problem::nowhere(format!("name: {why}"))],
        })?,
    };
    // `spec` checked the unit names against the stack's own name; a copy
    // under another name (`-p`) must not make them clash either.
    if global.project_name.is_some() {
        let units = stack.services.keys().chain(stack.datastores.keys());
        let problems: Vec<Problem> = units
            .filter_map(|unit| spec::validate::name_clash(&stack, &project, unit))
            .map(|why| Problem::nowhere(format!("project name `{project}`: {why}")))
            .collect();
        if !problems.is_empty() {
            return Err(Report {
                sources: Default::default(),
                problems,
            });
        }
    }
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
    try_load(global).map_err(|report| {
        say!("{}", report.render(stderr_color(global.no_color)));
        anyhow::Error::new(Reported(exit::FAILURE))
    })
}
