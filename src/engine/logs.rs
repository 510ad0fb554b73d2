//! Container output: the last lines for failure reports, and streams for
//! `logs` and the foreground `up`.

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures::{Stream, StreamExt};

use super::{Engine, EngineError};

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdout,
    Stderr,
}

/// One line (or chunk, for output without newlines) of a container's output.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub channel: Channel,
    pub text: String,
    /// When the engine received the line, in nanoseconds since the epoch;
    /// only when the query asked for `timestamps`.
    pub time_nano: Option<i64>,
}

/// What to ask for.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub follow: bool,
    /// Seconds since the epoch; 0 for everything.
    pub since: i64,
    /// The last N lines; `None` for all.
    pub tail: Option<u64>,
    /// Stamp each line with the engine's receive time (`LogLine::time_nano`),
    /// so a follower can tell lines it has already shown from new ones.
    pub timestamps: bool,
}

impl Engine {
    /// The container's output as a stream of lines.
    pub fn logs(
        &self,
        id: &str,
        query: &LogQuery,
    ) -> impl Stream<Item = Result<LogLine, EngineError>> + Send + 'static {
        let what = format!("reading the logs of `{id}`");
        let stamped = query.timestamps;
        self.docker
            .logs(
                id,
                Some(LogsOptions {
                    follow: query.follow,
                    stdout: true,
                    stderr: true,
                    since: i32::try_from(query.since).unwrap_or(0),
                    timestamps: query.timestamps,
                    tail: query
                        .tail
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "all".into()),
                    ..Default::default()
                }),
            )
            .map(move |item| match item {
                Ok(output) => Ok(to_line(output, stamped)),
                Err(e) => Err(EngineError::api(what.clone(), e)),
            })
    }

    /// The last `n` lines of output, for reports; empty if they cannot be read.
    pub async fn last_lines(&self, id: &str, n: u64) -> Vec<String> {
        let query = LogQuery {
            follow: false,
            since: 0,
            tail: Some(n),
            timestamps: false,
        };
        let mut stream = Box::pin(self.logs(id, &query));
        let mut out = Vec::new();
        while let Some(Ok(line)) = stream.next().await {
            for l in line.text.lines() {
                out.push(l.to_string());
            }
        }
        let skip = out.len().saturating_sub(n as usize);
        out.split_off(skip)
    }
}

fn to_line(output: LogOutput, stamped: bool) -> LogLine {
    let (channel, bytes) = match output {
        LogOutput::StdErr { message } => (Channel::Stderr, message),
        LogOutput::StdOut { message } => (Channel::Stdout, message),
        LogOutput::Console { message } => (Channel::Stdout, message),
        LogOutput::StdIn { message } => (Channel::Stdout, message),
    };
    let text = String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\n', '\r'])
        .to_string();
    if !stamped {
        return LogLine {
            channel,
            text,
            time_nano: None,
        };
    }
    // The engine puts `<RFC 3339 time> ` before every line; a chunk holding
    // several lines (a terminal's output) has one per line.
    let mut time_nano = None;
    let lines: Vec<&str> = text
        .split('\n')
        .map(|line| match line.split_once(' ') {
            Some((stamp, rest)) => match stamp_nanos(stamp) {
                Some(t) => {
                    time_nano.get_or_insert(t);
                    rest
                }
                None => line,
            },
            None => match stamp_nanos(line) {
                Some(t) => {
                    time_nano.get_or_insert(t);
                    ""
                }
                None => line,
            },
        })
        .collect();
    LogLine {
        channel,
        text: lines.join("\n"),
        time_nano,
    }
}

/// The engine's line stamp (`2024-05-01T12:00:00.123456789Z`, the fraction
/// optional) as nanoseconds since the epoch; `None` for anything else.
fn stamp_nanos(stamp: &str) -> Option<i64> {
    let (whole, nanos) = match stamp.split_once('.') {
        Some((head, rest)) => {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 || digits > 9 {
                return None;
            }
            let nanos = rest[..digits].parse::<i64>().ok()? * 10i64.pow(9 - digits as u32);
            (format!("{head}{}", &rest[digits..]), nanos)
        }
        None => (stamp.to_string(), 0),
    };
    // A date and a clock, not just any first word of a line.
    if whole.len() < "2024-05-01T12:00:00".len() || whole.as_bytes()[10] != b'T' {
        return None;
    }
    let secs = super::containers::parse_rfc3339(&whole)?;
    Some(secs * 1_000_000_000 + nanos)
}

/// `--since`: `10m` (that long ago), a Unix timestamp, or an RFC 3339 time
/// (`2024-05-01T12:00:00Z`), as seconds since the epoch.
pub fn parse_since(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(d) = crate::spec::units::parse_duration(text) {
        return Ok(now - d.as_secs() as i64);
    }
    super::containers::parse_rfc3339(text).ok_or_else(|| {
        format!("`{text}` is neither a duration (10m), a Unix time nor a time like 2024-05-01T12:00:00Z")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_split_off_lines() {
        let line = to_line(
            LogOutput::StdErr {
                message: "2023-11-14T22:13:20.000000042Z listening on :8080\n".into(),
            },
            true,
        );
        assert_eq!(line.text, "listening on :8080");
        assert_eq!(line.time_nano, Some(1_700_000_000_000_000_042));
        assert_eq!(line.channel, Channel::Stderr);

        let two = to_line(
            LogOutput::Console {
                message: "2023-11-14T22:13:20.5Z one\n2023-11-14T22:13:21Z two\n".into(),
            },
            true,
        );
        assert_eq!(two.text, "one\ntwo");
        assert_eq!(two.time_nano, Some(1_700_000_000_500_000_000));

        // A line of the container's own that starts like a stamp is left alone
        // when no stamp was asked for, and a word that is no stamp stays.
        let plain = to_line(
            LogOutput::StdOut {
                message: "2023-11-14T22:13:20Z app time\n".into(),
            },
            false,
        );
        assert_eq!(plain.text, "2023-11-14T22:13:20Z app time");
        assert_eq!(plain.time_nano, None);
        assert_eq!(stamp_nanos("hello"), None);
        assert_eq!(stamp_nanos("2023-11-14"), None);
        assert_eq!(stamp_nanos("2023-11-14T22:13:20.1234567890Z"), None);
    }

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
