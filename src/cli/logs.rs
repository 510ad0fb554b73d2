//! `devstack logs [-f] [--since WHEN] [--tail N] [SERVICE...]`: the stack's
//! output, one prefixed stream.

use super::args::{GlobalArgs, LogsArgs};
use super::stack::{check_units, project_of, use_color};
use super::{exit, Failed};
use crate::engine::logs::{parse_since, LogQuery};
use crate::engine::unix_now;
use crate::ui::connect;
use crate::ui::logs::stream_logs;

pub async fn run(global: &GlobalArgs, args: LogsArgs) -> anyhow::Result<u8> {
    let (project, loaded) = project_of(global)?;
    if let Some(loaded) = &loaded {
        check_units(loaded, &args.services)?;
    }
    let since = match &args.since {
        Some(text) => parse_since(text, unix_now())
            .map_err(|e| Failed::new(exit::USAGE, format!("--since: {e}")))?,
        None => 0,
    };
    let engine = connect().await?;
    let query = LogQuery {
        follow: args.follow,
        since,
        tail: args.tail,
        timestamps: false,
    };
    stream_logs(
        &engine,
        &project,
        &args.services,
        &query,
        use_color(global),
        None,
    )
    .await?;
    Ok(exit::OK)
}
