//! `devstack test [SERVICE...] -- CMD [ARGS...]`: a throwaway copy of the
//! stack, up, the command run against it, artifacts, down; the work is
//! `controller::test::run`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use super::args::GlobalArgs;
use super::stack::{duration_arg, load_stack, use_color};
use crate::controller::test::{self, TestOptions};
use crate::controller::LoadedStack;
use crate::ui::progress::Render;
use crate::ui::{exit, Failed};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Only these services (and what they depend on)
    pub services: Vec<String>,
    /// The test command and its arguments, after `--`; run on the host with
    /// DEVSTACK_PROXY_URL, DEVSTACK_URL_<SERVICE> and DEVSTACK_PROJECT set
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
    /// Where the logs, `ps`, routes, proxy config, command output and JUnit report go
    #[arg(long, value_name = "DIR", default_value = "devstack-artifacts")]
    pub artifacts: PathBuf,
    /// The whole run's limit: past it the command is stopped and the copy taken down (exit 124)
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// How long the copy may take to become healthy and routed
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub up_timeout: String,
}

pub async fn run(global: &GlobalArgs, args: TestArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    // A copy of its own unless `-p` names it.
    let loaded = if global.project_name.is_some() {
        loaded
    } else {
        let name = test::copy_name(loaded.project.as_str())?;
        LoadedStack::load(loaded.files.clone(), Some(&name)).map_err(|report| {
            Failed::new(exit::FAILURE, report.render(false).trim_end().to_string())
        })?
    };
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| duration_arg("--timeout", t))
        .transpose()?;
    let options = TestOptions {
        services: args.services,
        command: args.command,
        artifacts: args.artifacts,
        up_timeout: duration_arg("--up-timeout", &args.up_timeout)?,
        timeout,
        render: if std::io::stderr().is_terminal() {
            Render::Bars
        } else {
            Render::Plain
        },
        color: use_color(global),
    };
    test::run(&loaded, &options).await
}
