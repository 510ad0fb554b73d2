//! The command line: clap definitions (this file) and one module per subcommand.
//!
//! Arguments come in two layers: the clap structs here describe what a user
//! types; each subcommand turns them into library calls. Nothing below `cli`
//! sees a clap type.

// First: its printing macros are used by every module after it.
#[macro_use]
pub mod output;

pub mod agent;
pub mod args;
pub mod config;
pub mod down;
pub mod etcd;
pub mod exec;
pub mod import;
pub mod logs;
pub mod ps;
pub mod restart;
pub mod routes;
pub mod run;
pub mod scale;
pub mod stack;
pub mod up;
pub mod validate;
pub mod watch;

use std::process::ExitCode;

pub use args::{Cli, Command};

/// Exit codes, documented in `devstack --help` (see [`args::EXIT_CODES`]).
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

/// Runs one parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = dispatch(cli).await;
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if let Some(Reported(code)) = err.downcast_ref::<Reported>() {
                return ExitCode::from(*code);
            }
            let code = err
                .downcast_ref::<Failed>()
                .map(|f| f.code)
                .unwrap_or(exit::FAILURE);
            output::print_error(&err);
            ExitCode::from(code)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let global = cli.global;
    match cli.command {
        Command::Validate(args) => validate::run(&global, args),
        Command::Config(args) => config::run(&global, args),
        Command::Etcd(args) => etcd::run(&global, args).await,
        Command::Up(args) => up::run(&global, args).await,
        Command::Down(args) => down::run(&global, args).await,
        Command::Ps(args) => ps::run(&global, args).await,
        Command::Logs(args) => logs::run(&global, args).await,
        Command::Exec(args) => exec::run(&global, args).await,
        Command::Run(args) => run::run(&global, args).await,
        Command::Restart(args) => restart::run(&global, args).await,
        Command::Scale(args) => scale::run(&global, args).await,
        Command::Routes(args) => routes::run(&global, args).await,
        Command::Import(args) => import::run(&global, args),
        Command::Watch(args) => watch::run(&global, args).await,
        Command::Agent => agent::run(&global).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Written whole through `out!`: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "devstack", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            Ok(exit::OK)
        }
    }
}
