//! `devstack test [SERVICE...] -- CMD [ARGS...]`: a throwaway copy of the
//! stack, up, the command run against it, artifacts, down; the work is
//! `controller::test::run`.

use super::args::{GlobalArgs, ReapArgs, TestArgs};
use super::stack::{duration_arg, load_stack, render_mode, use_color};
use crate::controller::test::{self, TestOptions};
use crate::ui::{exit, Failed};

pub async fn run(global: &GlobalArgs, args: TestArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    // A copy of its own unless `-p` names it.
    let loaded = if global.project_name.is_some() {
        loaded
    } else {
        test::copy_of(&loaded)?
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
        render: render_mode(false),
        color: use_color(global),
    };
    test::run(&loaded, &options).await
}

/// The hidden `devstack -p COPY reap --owner PID:START --log FILE`, which
/// `devstack test` starts; the work is `controller::reaper::run`.
pub async fn reap(global: &GlobalArgs, args: ReapArgs) -> anyhow::Result<u8> {
    let Some(project) = &global.project_name else {
        return Err(Failed::new(exit::USAGE, "reap: which copy? (`-p NAME`)").into());
    };
    let Some(owner) = crate::process::ProcessIdentity::from_label(&args.owner, project) else {
        return Err(Failed::new(
            exit::USAGE,
            format!("reap: `--owner {}` is not PID:START", args.owner),
        )
        .into());
    };
    crate::controller::reaper::run(project, &owner, &args.log).await
}
