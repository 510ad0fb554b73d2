//! The engine's event stream, narrowed to one project's containers and typed,
//! for whoever follows a running stack (the registrar, the watcher, `up`).

use std::collections::HashMap;

use bollard::models::EventMessageTypeEnum;
use bollard::query_parameters::EventsOptions;
use futures::{Stream, StreamExt};
use serde::Serialize;

use super::{Engine, EngineError};
use crate::plan::names::{LABEL_PROJECT, LABEL_REPLICA, LABEL_SERVICE, LABEL_TASK};

/// What happened to a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ContainerEventKind {
    Created,
    Started,
    /// The main process exited (stop, crash or kill); `exit_code` from the engine.
    Died {
        exit_code: Option<i64>,
    },
    Stopped,
    /// A signal was sent: `docker kill`, or a stop's stop signal and, at the
    /// end of its grace, SIGKILL. `signal` is its number.
    Killed {
        signal: Option<i32>,
    },
    Paused,
    Unpaused,
    Restarted,
    Removed,
    /// The image's own HEALTHCHECK changed status (`healthy`, `unhealthy`, `starting`).
    Health {
        status: String,
    },
    /// The OOM killer hit it.
    OutOfMemory,
    /// Anything else the engine reports (exec_start, attach, ...), by name.
    Other {
        action: String,
    },
}

/// One event about one of the project's containers.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerEvent {
    pub container_id: String,
    pub name: String,
    /// The unit, for service and datastore containers.
    pub service: Option<String>,
    pub replica: Option<u32>,
    /// The task, for one-off containers.
    pub task: Option<String>,
    pub kind: ContainerEventKind,
    /// Nanoseconds since the epoch, as the engine stamped it.
    pub time_nano: i64,
}

impl Engine {
    /// Container events of the project from now on (or since `since`, seconds
    /// since the epoch, to catch up after a reconnect). "Now" is the second
    /// this is called, not when the stream is first polled (the request is
    /// lazy), so nothing between the call and the first poll is lost; events
    /// earlier in the same second may come too. The stream ends when the
    /// connection does; callers that must not miss anything re-list the
    /// containers after reconnecting (level-triggered), rather than trusting
    /// the event history.
    pub fn project_events(
        &self,
        project: &str,
        since: Option<i64>,
    ) -> impl Stream<Item = Result<ContainerEvent, EngineError>> + Send + 'static {
        let filters: HashMap<String, Vec<String>> = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{LABEL_PROJECT}={project}")],
            ),
        ]);
        let what = format!("following the events of `{project}`");
        self.docker
            .events(Some(EventsOptions {
                since: Some(since.unwrap_or_else(super::unix_now).to_string()),
                until: None,
                filters: Some(filters),
            }))
            .filter_map(move |item| {
                let what = what.clone();
                async move {
                    match item {
                        Ok(message) => {
                            if message.typ != Some(EventMessageTypeEnum::CONTAINER) {
                                return None;
                            }
                            let actor = message.actor.unwrap_or_default();
                            let attrs = actor.attributes.unwrap_or_default();
                            let action = message.action.unwrap_or_default();
                            Some(Ok(ContainerEvent {
                                container_id: actor.id.unwrap_or_default(),
                                name: attrs.get("name").cloned().unwrap_or_default(),
                                service: attrs.get(LABEL_SERVICE).cloned(),
                                replica: attrs.get(LABEL_REPLICA).and_then(|r| r.parse().ok()),
                                task: attrs.get(LABEL_TASK).cloned(),
                                kind: kind_of(&action, &attrs),
                                time_nano: message.time_nano.unwrap_or_default(),
                            }))
                        }
                        Err(e) => Some(Err(EngineError::api(what, e))),
                    }
                }
            })
    }
}

/// The engine's action names (`health_status: healthy`, `die`, ...) as a kind.
fn kind_of(action: &str, attrs: &HashMap<String, String>) -> ContainerEventKind {
    if let Some(status) = action.strip_prefix("health_status") {
        return ContainerEventKind::Health {
            status: status.trim_start_matches(':').trim().to_string(),
        };
    }
    match action {
        "create" => ContainerEventKind::Created,
        "start" => ContainerEventKind::Started,
        "die" => ContainerEventKind::Died {
            exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
        },
        "stop" => ContainerEventKind::Stopped,
        "kill" => ContainerEventKind::Killed {
            signal: attrs.get("signal").and_then(|s| s.parse().ok()),
        },
        "pause" => ContainerEventKind::Paused,
        "unpause" => ContainerEventKind::Unpaused,
        "restart" => ContainerEventKind::Restarted,
        "destroy" => ContainerEventKind::Removed,
        "oom" => ContainerEventKind::OutOfMemory,
        other => ContainerEventKind::Other {
            action: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_map_to_kinds() {
        let attrs = HashMap::from([("exitCode".to_string(), "137".to_string())]);
        assert_eq!(
            kind_of("die", &attrs),
            ContainerEventKind::Died {
                exit_code: Some(137)
            }
        );
        assert_eq!(
            kind_of("health_status: unhealthy", &attrs),
            ContainerEventKind::Health {
                status: "unhealthy".into()
            }
        );
        assert_eq!(kind_of("destroy", &attrs), ContainerEventKind::Removed);
        let attrs = HashMap::from([("signal".to_string(), "15".to_string())]);
        assert_eq!(
            kind_of("kill", &attrs),
            ContainerEventKind::Killed { signal: Some(15) }
        );
    }
}
