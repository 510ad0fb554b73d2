//! `devstack logs [-f] [--since WHEN] [--tail N] [SERVICE...]`: the stack's
//! output, one prefixed stream.

use super::args::{GlobalArgs, LogsArgs};
use super::stack::{check_units, project_of, use_color};
use super::{exit, Failed};
use crate::engine::logs::LogQuery;
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

/// `10m` (that long ago), a Unix timestamp, or an RFC 3339 time
/// (`2024-05-01T12:00:00Z`), as seconds since the epoch.
pub(crate) fn parse_since(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(d) = crate::spec::units::parse_duration(text) {
        return Ok(now - d.as_secs() as i64);
    }
    crate::engine::containers::parse_rfc3339(text).ok_or_else(|| {
        format!("`{text}` is neither a duration (10m), a Unix time nor a time like 2024-05-01T12:00:00Z")
    })
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_takes_durations_unix_times_and_rfc3339() {
        assert_eq!(parse_since("10m", 1000), Ok(400));
        assert_eq!(parse_since("1700000000", 0), Ok(1_700_000_000));
        assert_eq!(parse_since("2023-11-14T22:13:20Z", 0), Ok(1_700_000_000));
        assert_eq!(
            parse_since("2023-11-15T00:13:20+02:00", 0),
            Ok(1_700_000_000)
        );
        assert!(parse_since("yesterday", 0).is_err());
    }
}
