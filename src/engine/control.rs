//! The proxy's control port, whichever proxy runs (HAProxy's master CLI
//! relay, nginx's read-only table): whether it answers, and the stack's
//! reach probe ([`super::reach`]) made on it, the stack's one port known to
//! listen both at the container's address and on the engine's loopback.

use std::net::SocketAddr;
use std::time::Duration;

use super::nginx::read_control;
use super::proxy::{master_answers, proxy_container_name, ControlPaths, ATTEMPT};
use super::reach::Reach;
use super::Engine;
use crate::spec::ProxyKind;

/// Whether the control port of a `kind` proxy answers at `addr` within one
/// attempt.
pub async fn answers(kind: ProxyKind, addr: SocketAddr) -> bool {
    match kind {
        ProxyKind::Haproxy => master_answers(addr).await,
        ProxyKind::Nginx => matches!(
            tokio::time::timeout(ATTEMPT, read_control(addr)).await,
            Ok(Ok(_))
        ),
    }
}

/// One round of the reach probe on a running proxy: its address first,
/// then its loopback-published control port. `None`: neither answered yet
/// (the proxy may still be starting; the caller tries again until its own
/// deadline, then decides [`Reach::Exec`]). A loopback answer is taken only
/// after the address had one more chance, so a proxy that started between
/// the two attempts is not taken for an unreachable bridge.
pub async fn probe_reach(paths: &ControlPaths, kind: ProxyKind) -> Option<Reach> {
    let direct = paths.for_reach(Reach::Direct);
    if let Some(addr) = direct {
        if answers(kind, addr).await {
            return Some(Reach::Direct);
        }
    }
    let published = paths.published?;
    if !answers(kind, published).await {
        return None;
    }
    if let Some(addr) = direct {
        if answers(kind, addr).await {
            return Some(Reach::Direct);
        }
    }
    Some(Reach::Published)
}

impl Engine {
    /// Decides the stack's reach on its proxy when one already runs (a
    /// routing path started again beside a running stack), before anything
    /// probes the stack's containers. `None`: no proxy runs, or neither path
    /// answered within a few rounds; the router's start decides then.
    pub async fn decide_reach_on_running_proxy(&self, project: &str) -> Option<Reach> {
        if self.reach_decided() {
            return Some(self.reach());
        }
        let name = proxy_container_name(project);
        let proxy = self.proxy_container(&name).await.ok()?;
        for _ in 0..3 {
            if let Some(found) = probe_reach(&proxy.paths, proxy.kind).await {
                self.settle_reach(found);
                return Some(found);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_listening_decides_nothing_yet() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let paths = ControlPaths {
            ip: None,
            published: Some(closed),
        };
        for kind in [ProxyKind::Haproxy, ProxyKind::Nginx] {
            assert_eq!(probe_reach(&paths, kind).await, None);
        }
    }
}
