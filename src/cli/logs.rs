//! `devstack logs [-f] [--since WHEN] [--tail N] [SERVICE...]`: the stack's
//! output, one prefixed stream.

use super::args::{GlobalArgs, LogsArgs};
use super::up::{connect, project_of, stream_logs, unix_now, use_color};
use super::{exit, Failed};
use crate::engine::logs::LogQuery;

pub async fn run(global: &GlobalArgs, args: LogsArgs) -> anyhow::Result<u8> {
    let (project, loaded) = project_of(global)?;
    if let Some(loaded) = &loaded {
        for s in &args.services {
            if loaded.stack.unit(s).is_none() {
                let hint = crate::plan::graph::suggest(s, loaded.stack.units().map(|(n, _, _)| n));
                return Err(Failed::new(
                    exit::USAGE,
                    format!("`{s}` is not a service or datastore of this stack{hint}"),
                )
                .into());
            }
        }
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
    parse_rfc3339(text).ok_or_else(|| {
        format!("`{text}` is neither a duration (10m), a Unix time nor a time like 2024-05-01T12:00:00Z")
    })
}

/// A UTC (or offset) RFC 3339 time, to whole seconds.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, o) = time.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    } else {
        (time, 0)
    };
    let mut c = clock.split(':');
    let h: i64 = c.next()?.parse().ok()?;
    let min: i64 = c.next()?.parse().ok()?;
    let sec: f64 = c.next().unwrap_or("0").parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + min * 60 + sec as i64 - offset)
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
