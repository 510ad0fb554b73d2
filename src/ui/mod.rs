//! `ui`: what a command shows and how it ends, shared by every command and by the
//! controller of a running stack: the printing macros (`out!`, `outln!`,
//! `say!`, `sayln!`), the exit codes and the errors that carry them, progress
//! rendering, the table after `up`, the doctor's report, log streaming, and the terminal lent to
//! a command in a container.
//!
//! It sits below `cli` and `controller` and above the pipeline: it reads
//! engine and plan types and never decides anything about the stack.

// First: its printing macros are used by every module after it.
#[macro_use]
pub mod output;

pub mod doctor;
pub mod junit;
pub mod logs;
pub mod progress;
pub mod terminal;

use console::Style;

use crate::engine::EngineError;

/// Rows laid out in columns two spaces apart, each as wide as its widest
/// cell (the header's included), trailing spaces trimmed; the header's line first.
pub fn columns<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> Vec<String> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<String> = cells
            .enumerate()
            .map(|(i, c)| format!("{c:w$}", w = widths[i]))
            .collect();
        cells.join("  ").trim_end().to_string()
    };
    let mut lines = vec![line(&mut header.iter().copied())];
    lines.extend(rows.iter().map(|r| line(&mut r.iter().map(String::as_str))));
    lines
}

/// Exit codes, documented in `devstack --help`.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// The command failed: an invalid stack file, an unhealthy service, a failed task.
    pub const FAILURE: u8 = 1;
    /// The command line itself was wrong (clap reports these).
    pub const USAGE: u8 = 2;
    /// No Docker engine answered.
    pub const NO_ENGINE: u8 = 3;
    /// `up --wait` gave up: a service was not healthy before the timeout.
    pub const UNHEALTHY: u8 = 4;
    /// An image could not be had: its build failed, or its pull was refused.
    pub const BUILD_FAILED: u8 = 5;
    /// The stack has routes (or a real registry) and its routing path could
    /// not start, or a route was not served through the proxy in time.
    pub const ROUTING: u8 = 6;
    /// The subcommand exists in the interface but this build does not carry it out yet.
    pub const NOT_IMPLEMENTED: u8 = 69;
    /// Interrupted by Ctrl-C.
    pub const INTERRUPTED: u8 = 130;
}

/// An error that has already been shown to the user (a validation report, say)
/// and only needs its exit code passed up.
#[derive(Debug, thiserror::Error)]
#[error("exit {0}")]
pub struct Reported(pub u8);

/// An error that the top level prints once, with a chosen exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    pub code: u8,
    pub message: String,
}

impl Failed {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failed {
            code,
            message: message.into(),
        }
    }
}

/// An engine error as the exit code it deserves, with build output for a
/// failed build.
pub fn engine_failure(e: EngineError) -> anyhow::Error {
    let code = match &e {
        EngineError::NoEngine { .. } => exit::NO_ENGINE,
        EngineError::Build { .. } | EngineError::Context { .. } | EngineError::Pull { .. } => {
            exit::BUILD_FAILED
        }
        _ => exit::FAILURE,
    };
    let mut message = e.to_string();
    if let EngineError::Build { output, .. } = &e {
        if !output.is_empty() {
            message.push_str("\nlast lines of the build:\n");
            for line in output {
                message.push_str("  | ");
                message.push_str(line);
                message.push('\n');
            }
            message.push_str("(the rest of the stack was left as it was)");
        }
    }
    Failed::new(code, message.trim_end().to_string()).into()
}

/// Connects to Docker; no engine is exit code 3 with one sentence.
pub async fn connect() -> anyhow::Result<crate::engine::Engine> {
    crate::engine::Engine::connect()
        .await
        .map_err(engine_failure)
}

/// A stable colour per service name, so each one's lines are easy to follow.
pub fn service_style(name: &str, color: bool) -> Style {
    if !color {
        return Style::new();
    }
    let palette = [
        Style::new().cyan(),
        Style::new().yellow(),
        Style::new().green(),
        Style::new().magenta(),
        Style::new().blue(),
        Style::new().red(),
        Style::new().cyan().bright(),
        Style::new().yellow().bright(),
        Style::new().green().bright(),
        Style::new().magenta().bright(),
    ];
    let hash = name
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    palette[hash % palette.len()].clone().force_styling(true)
}
