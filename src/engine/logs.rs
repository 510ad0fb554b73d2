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
}

/// What to ask for.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub follow: bool,
    /// Seconds since the epoch; 0 for everything.
    pub since: i64,
    /// The last N lines; `None` for all.
    pub tail: Option<u64>,
}

impl Engine {
    /// The container's output as a stream of lines.
    pub fn logs(
        &self,
        id: &str,
        query: &LogQuery,
    ) -> impl Stream<Item = Result<LogLine, EngineError>> + Send + 'static {
        let what = format!("reading the logs of `{id}`");
        self.docker
            .logs(
                id,
                Some(LogsOptions {
                    follow: query.follow,
                    stdout: true,
                    stderr: true,
                    since: i32::try_from(query.since).unwrap_or(0),
                    tail: query
                        .tail
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "all".into()),
                    ..Default::default()
                }),
            )
            .map(move |item| match item {
                Ok(output) => Ok(to_line(output)),
                Err(e) => Err(EngineError::api(what.clone(), e)),
            })
    }

    /// The last `n` lines of output, for reports; empty if they cannot be read.
    pub async fn last_lines(&self, id: &str, n: u64) -> Vec<String> {
        let query = LogQuery {
            follow: false,
            since: 0,
            tail: Some(n),
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

fn to_line(output: LogOutput) -> LogLine {
    let (channel, bytes) = match output {
        LogOutput::StdErr { message } => (Channel::Stderr, message),
        LogOutput::StdOut { message } => (Channel::Stdout, message),
        LogOutput::Console { message } => (Channel::Stdout, message),
        LogOutput::StdIn { message } => (Channel::Stdout, message),
    };
    let text = String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\n', '\r'])
        .to_string();
    LogLine { channel, text }
}
