//! `devstack etcd serve`: the embedded etcd server on its own, in the
//! foreground, until Ctrl-C or SIGTERM (a second one while it stops exits
//! at once); and `devstack etcd watch` followed until Ctrl-C.

use crate::controller::{on_signals, Signals, Tasks};
use crate::etcd::client::{Event, Watch};
use crate::etcd::{RunningServer, Server, ServerConfig};
use crate::ui::{exit, Failed};

/// Starts the server, tells `started` about it, and serves until a signal
/// stops it; returns the exit code.
pub async fn serve(
    config: ServerConfig,
    started: impl FnOnce(&RunningServer),
) -> anyhow::Result<u8> {
    let server = Server::start(config)
        .await
        .map_err(|e| Failed::new(exit::FAILURE, e.to_string()))?;
    started(&server);
    let tasks = Tasks::new();
    let mut signals = on_signals(&tasks, Signals::InterruptOrTerminate);
    let stop = server.stop_token();
    let served = tokio::select! {
        r = server.wait() => r,
        _ = async {
            let _ = signals.wait_for(|n| *n >= 1).await;
            sayln!("etcd: stopping (again to force)");
            stop.cancel();
            let _ = signals.wait_for(|n| *n >= 2).await;
        } => std::process::exit(i32::from(exit::INTERRUPTED)),
    };
    tasks.join().await;
    served.map_err(|e| Failed::new(exit::FAILURE, format!("etcd server failed: {e}")))?;
    Ok(exit::OK)
}

/// Hands each batch of the watch's events to `each` until the server ends
/// the watch (exit 0) or Ctrl-C (exit 130); an error of either ends it.
pub async fn follow(
    mut watch: Watch,
    mut each: impl FnMut(Vec<Event>) -> anyhow::Result<()>,
) -> anyhow::Result<u8> {
    let tasks = Tasks::new();
    let _signals = on_signals(&tasks, Signals::Interrupt);
    let stop = tasks.stop_token().clone();
    let result = async {
        loop {
            let events = tokio::select! {
                _ = stop.cancelled() => return Ok(exit::INTERRUPTED),
                events = watch.next() => events,
            };
            match events.map_err(|e| Failed::new(exit::FAILURE, e.to_string()))? {
                Some(events) => each(events)?,
                None => return Ok(exit::OK),
            }
        }
    }
    .await;
    tasks.join().await;
    result
}
