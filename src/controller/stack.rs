//! The stack a controller runs: loaded once from its files, with the project
//! name its Docker objects are labelled with, and loaded again (the same way)
//! when the files change.

use std::path::PathBuf;

use crate::plan::names::ProjectName;
use crate::spec::{self, LoadOptions, Problem, Report, Stack};

/// A valid stack, with the name its Docker objects are labelled with.
#[derive(Debug, Clone)]
pub struct LoadedStack {
    pub stack: Stack,
    /// The project name: `--project-name`, `DEVSTACK_PROJECT_NAME`, or the stack's name.
    pub project: ProjectName,
    /// The stack files, in merge order.
    pub files: Vec<PathBuf>,
    /// What imported Compose files, manifests or units left out, as lines
    /// to show once (`file:line:col: class: path: why`).
    pub notes: Vec<String>,
    /// The proxy's `listen` as the stack files give it (or its default),
    /// before [`super::listen::resolve`] picked a free port in its place.
    pub file_listen: std::net::SocketAddr,
}

impl LoadedStack {
    /// Loads the stack files (in merge order) under the project name given
    /// (`-p`), or the stack's own name; the report of every problem when the
    /// stack is invalid.
    pub fn load(files: Vec<PathBuf>, project: Option<&ProjectName>) -> Result<Self, Report> {
        let loaded = spec::load_with_notes(&LoadOptions::new(files.clone()))?;
        let notes = crate::spec::import::report::render_all(&loaded.notes, &loaded.sources);
        let stack = loaded.stack;
        // `-p` was checked as it was parsed; the stack's name by `spec`, with
        // the same rule, so this only fails if the two rules ever part.
        let project = match project {
            Some(name) => name.clone(),
            None => ProjectName::new(&stack.name).map_err(|why| Report {
                sources: Default::default(),
                problems: vec![Problem::nowhere(format!("name: {why}"))],
            })?,
        };
        // `spec` checked the unit names against the stack's own name; a copy
        // under another name (`-p`) must not make them clash either.
        if project.as_str() != stack.name {
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
            file_listen: stack.proxy.listen,
            stack,
            project,
            files,
            notes,
        })
    }

    /// Whether every name is a service or datastore of the stack; else what
    /// to say about the first that is not, with the closest name.
    pub fn check_units(&self, names: &[String]) -> Result<(), String> {
        match names.iter().find(|s| self.stack.unit(s).is_none()) {
            None => Ok(()),
            Some(s) => {
                let hint = crate::plan::graph::suggest(s, self.stack.units().map(|(n, _, _)| n));
                Err(format!(
                    "`{s}` is not a service or datastore of this stack{hint}"
                ))
            }
        }
    }

    /// Whether `task` is one of the stack's tasks; else what to say, with the
    /// closest name.
    pub fn check_task(&self, task: &str) -> Result<(), String> {
        if self.stack.tasks.contains_key(task) {
            return Ok(());
        }
        let hint = crate::plan::graph::suggest(task, self.stack.tasks.keys().map(String::as_str));
        let name = task.to_string();
        Err(crate::plan::PlanError::UnknownTask { name, hint }.to_string())
    }

    /// The stack its files hold now (an edit), loaded as [`LoadedStack::load`]
    /// loaded the first one; the project name stays.
    pub fn reload(&self) -> Result<Stack, Report> {
        let mut stack = spec::load(&LoadOptions::new(self.files.clone()))?;
        // The port picked for this copy stays while the files ask what they
        // asked; a changed `listen` waits for the next `up`, as any proxy setting.
        if stack.proxy.listen == self.file_listen {
            stack.proxy.listen = self.stack.proxy.listen;
        }
        Ok(stack)
    }
}
