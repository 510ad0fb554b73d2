//! The command line: `run` and its dispatch, one module per subcommand.
//!
//! Arguments come in two layers: the clap structs (`args.rs`) describe what
//! a user types; each subcommand turns them into plain values, calls one
//! library function (most often in `controller`) and prints through `ui`.
//! Nothing below `cli` sees a clap type, and nothing outside imports `cli`.

pub mod agent;
pub mod args;
pub mod config;
pub mod data;
pub mod doctor;
pub mod down;
pub mod etcd;
pub mod exec;
pub mod export;
pub mod import;
pub mod logs;
pub mod projects;
pub mod ps;
pub mod restart;
pub mod routes;
pub mod run;
pub mod scale;
pub mod stack;
pub mod test;
pub mod up;
pub mod validate;
pub mod watch;

use std::process::ExitCode;

pub use crate::ui::{exit, Failed, Reported};
pub use args::{Cli, Command};

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
            crate::ui::output::print_error(&err);
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
        Command::Data(args) => data::run(&global, args).await,
        Command::Import(args) => import::run(&global, args),
        Command::Export(args) => export::run(&global, args),
        Command::Watch(args) => watch::run(&global, args).await,
        Command::Test(args) => test::run(&global, args).await,
        Command::Ls(args) => projects::ls(&global, args).await,
        Command::Prune(args) => projects::prune(&global, args).await,
        Command::Doctor(args) => doctor::run(&global, args).await,
        Command::Agent => agent::run(&global).await,
        Command::Reap(args) => test::reap(&global, args).await,
        Command::Relay { addr } => match crate::engine::tunnel::relay(&addr) {
            Ok(()) => Ok(exit::OK),
            Err(why) => Err(anyhow::anyhow!("relay: {why}")),
        },
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
