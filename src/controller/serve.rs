//! `devstack etcd serve`: the embedded etcd server on its own, in the
//! foreground, until Ctrl-C or SIGTERM (a second one while it stops exits at once).

use crate::controller::{on_signals, Signals, Tasks};
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
