//! `devstack up`: build, start in dependency order, wait healthy, then stream
//! logs (foreground), return (`--detach`), or report (`--wait`); the work is
//! `controller::up::run`.

use super::args::{GlobalArgs, UpArgs};
use super::stack::{duration_arg, load_stack, render_mode, use_color};
use crate::controller::up::{self, UpOptions};

pub async fn run(global: &GlobalArgs, args: UpArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let timeout = duration_arg("--timeout", &args.timeout)?;
    let options = UpOptions {
        services: args.services,
        timeout,
        detach: args.detach,
        wait: args.wait,
        json: args.json,
        render: render_mode(args.json),
        color: use_color(global),
        from_snapshot: args.from_snapshot,
        free_port: false,
    };
    up::run(&loaded, &options).await
}
