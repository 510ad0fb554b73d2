//! How this process reaches the containers of a stack: one decision per
//! stack, probed once (on the proxy container, when the routing path starts)
//! and recorded, which health probes, the proxy's control channel and the
//! swap's checks all follow.
//!
//! - [`Reach::Direct`]: the container's address on the stack network answers
//!   (a local engine on Linux: the bridge is a host interface).
//! - [`Reach::Published`]: only ports published on the engine's loopback
//!   (`127.0.0.1`, never a wider address) answer: Docker Desktop's VM, a
//!   host that cannot route to the bridge. The proxy's control port is
//!   always published that way; services' probe ports are published that
//!   way (ephemeral, loopback only) when this is the decision, so the
//!   decision is made before those containers are created.
//! - [`Reach::Exec`]: neither answers (a remote engine): probes run through
//!   `docker exec`, and the TCP ports devstack needs (the proxy's control
//!   channel, the registry in the stack) through tunnels of exec relays
//!   (`super::tunnel`).
//!
//! Beside it, the other direction: where the stack's registry (the etcd
//! behind `etcd:2379`) runs, [`Registry`]: on this host, the embedded
//! server on the network's gateway, where the stack's containers reach it;
//! on this host where their `host.docker.internal` leads, where they reach
//! only that; or in a container of the stack where they reach neither
//! (decided by `Engine::probe_gateway` and
//! `Engine::probe_host_docker_internal` from the proxy container, see
//! `super::registry`).
//!
//! The decision lives in a cell every clone of an [`Engine`] shares, so the
//! registrar, the router and `apply` of one process read the same one. The
//! probe itself is made on the proxy (`control::probe_reach`): its control port is
//! the stack's one port known to listen, both at its address and on loopback.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Engine;

/// How devstack connects to a container port of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reach {
    /// The container's address on the stack network.
    Direct,
    /// A port published on the engine's loopback (127.0.0.1 only).
    Published,
    /// `docker exec` in the container.
    Exec,
}

impl Reach {
    /// The word used in output and in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Direct => "direct",
            Reach::Published => "published",
            Reach::Exec => "exec",
        }
    }

    /// What it means, for a progress line.
    pub fn describe(self) -> &'static str {
        match self {
            Reach::Direct => "containers' addresses on the stack network",
            Reach::Published => "ports published on 127.0.0.1",
            Reach::Exec => "docker exec (neither addresses nor loopback ports answer)",
        }
    }

    /// What this process starts from before a stack's probe decides: the
    /// bridge of a local, rootful engine on Linux is a host interface; a
    /// rootless engine (`rootless`: its socket is not root's) keeps its
    /// bridge inside its own namespace, and forwards loopback ports, as a
    /// local engine elsewhere (Docker Desktop's socket or named pipe) or one
    /// reached on this host's loopback does; an engine on another host
    /// (`tcp://` to another address, `ssh://`) has its loopback, and its
    /// bridge, out of reach, so only exec gets in. Only the start: the
    /// probe on the stack's proxy replaces it (see [`Engine::settle_reach`]).
    pub(crate) fn presumed(host: &str, rootless: bool) -> Reach {
        if host.starts_with("unix://") {
            if cfg!(target_os = "linux") && !rootless {
                Reach::Direct
            } else {
                Reach::Published
            }
        } else if host.starts_with("npipe://") || on_this_host(host) {
            Reach::Published
        } else {
            Reach::Exec
        }
    }

    /// Whether the engine at `host` runs rootless, as far as this host can
    /// see without asking it: a Unix socket owned by another user than root
    /// (a rootful engine's socket is root's, whatever its group).
    pub(crate) fn socket_is_rootless(host: &str) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            host.strip_prefix("unix://")
                .and_then(|path| std::fs::metadata(path).ok())
                .is_some_and(|m| m.uid() != 0)
        }
        #[cfg(not(unix))]
        {
            let _ = host;
            false
        }
    }

    fn code(self) -> u8 {
        match self {
            Reach::Direct => 0,
            Reach::Published => 1,
            Reach::Exec => 2,
        }
    }

    fn of_code(code: u8) -> Reach {
        match code & 0b11 {
            0 => Reach::Direct,
            1 => Reach::Published,
            _ => Reach::Exec,
        }
    }
}

/// Where the stack's registry (the etcd behind `etcd:2379`) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Registry {
    /// The embedded etcd in the devstack process, on the stack network's
    /// gateway address: the stack's containers reach it there.
    Host,
    /// The embedded etcd in the devstack process, where the containers'
    /// `host.docker.internal` (the engine's `host-gateway` mapping) leads:
    /// the default bridge's gateway on a Linux engine, this host's loopback
    /// where the engine runs in a VM (Docker Desktop). The containers cannot
    /// reach the stack network's gateway, but reach that.
    HostGateway,
    /// `devstack etcd serve` in a container of the stack
    /// (`<project>-registry`): the containers cannot reach this host.
    Stack,
}

impl Registry {
    /// The word used in output and in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Registry::Host => "host",
            Registry::HostGateway => "host-gateway",
            Registry::Stack => "stack",
        }
    }

    /// What it means, for a progress line.
    pub fn describe(self) -> &'static str {
        match self {
            Registry::Host => "on this host, at the stack network's gateway",
            Registry::HostGateway => {
                "on this host, reached as host.docker.internal (containers cannot reach the stack network's gateway)"
            }
            Registry::Stack => "in a container of the stack (containers cannot reach this host)",
        }
    }

    fn code(self) -> u8 {
        match self {
            Registry::Host => REGISTRY_HOST,
            Registry::HostGateway => REGISTRY_HOST_GATEWAY,
            Registry::Stack => REGISTRY_STACK,
        }
    }
}

impl std::fmt::Display for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Set once decided: the low bits hold the [`Reach`].
const DECIDED: u8 = 0b100;
/// The [`Registry`] bits, beside the reach's: none of them, undecided.
const REGISTRY_HOST: u8 = 0b01000;
const REGISTRY_STACK: u8 = 0b10000;
const REGISTRY_HOST_GATEWAY: u8 = REGISTRY_HOST | REGISTRY_STACK;
const REGISTRY_BITS: u8 = REGISTRY_HOST | REGISTRY_STACK;

/// The decision every clone of one [`Engine`] shares.
#[derive(Debug, Clone)]
pub(crate) struct ReachCell(Arc<AtomicU8>);

impl ReachCell {
    pub(crate) fn presumed(host: &str) -> ReachCell {
        let rootless = Reach::socket_is_rootless(host);
        ReachCell(Arc::new(AtomicU8::new(
            Reach::presumed(host, rootless).code(),
        )))
    }

    fn settle_reach(&self, reach: Reach) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some((old & REGISTRY_BITS) | reach.code() | DECIDED)
            });
    }

    fn registry(&self) -> Option<Registry> {
        match self.0.load(Ordering::Acquire) & REGISTRY_BITS {
            REGISTRY_HOST => Some(Registry::Host),
            REGISTRY_STACK => Some(Registry::Stack),
            REGISTRY_HOST_GATEWAY => Some(Registry::HostGateway),
            _ => None,
        }
    }

    fn settle_registry(&self, registry: Registry) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some((old & !REGISTRY_BITS) | registry.code())
            });
    }
}

impl Engine {
    /// How this process reaches the stack's containers: the recorded
    /// decision once [`Engine::settle_reach`] made it, else the presumption.
    pub fn reach(&self) -> Reach {
        Reach::of_code(self.reach.0.load(Ordering::Acquire))
    }

    /// Whether a probe (or a recorded probe) decided [`Engine::reach`].
    pub fn reach_decided(&self) -> bool {
        self.reach.0.load(Ordering::Acquire) & DECIDED != 0
    }

    /// Records the stack's decision for every clone of this engine handle
    /// (the registry's, if made, stays).
    pub fn settle_reach(&self, reach: Reach) {
        self.reach.settle_reach(reach);
    }

    /// Where the stack's registry runs, once its routing path decided (or
    /// a recorded decision was adopted).
    pub fn registry(&self) -> Option<Registry> {
        self.reach.registry()
    }

    /// Records where the stack's registry runs, for every clone of this
    /// engine handle (the reach decision stays as it is).
    pub fn settle_registry(&self, registry: Registry) {
        self.reach.settle_registry(registry);
    }
}

/// Whether a `tcp://`/`http(s)://` engine address names this host's loopback.
fn on_this_host(host: &str) -> bool {
    let Some((scheme, rest)) = host.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "tcp" | "http" | "https") {
        return false;
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let name = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cell_is_shared_and_remembers_that_it_was_decided() {
        let cell = ReachCell::presumed("unix:///var/run/docker.sock");
        let other = cell.clone();
        assert_eq!(
            Reach::of_code(cell.0.load(Ordering::Acquire)),
            Reach::presumed("unix:///var/run/docker.sock", false)
        );
        other
            .0
            .store(Reach::Published.code() | DECIDED, Ordering::Release);
        let code = cell.0.load(Ordering::Acquire);
        assert_eq!(Reach::of_code(code), Reach::Published);
        assert_ne!(code & DECIDED, 0);
    }

    #[test]
    fn the_registry_and_the_reach_are_kept_apart_in_one_cell() {
        let cell = ReachCell::presumed("tcp://10.0.0.2:2375");
        let other = cell.clone();
        assert_eq!(cell.registry(), None);
        other.settle_registry(Registry::Stack);
        assert_eq!(cell.registry(), Some(Registry::Stack));
        // Settling the reach keeps the registry, and the other way round.
        cell.settle_reach(Reach::Direct);
        assert_eq!(other.registry(), Some(Registry::Stack));
        let code = other.0.load(Ordering::Acquire);
        assert_eq!(Reach::of_code(code), Reach::Direct);
        assert_ne!(code & DECIDED, 0);
        other.settle_registry(Registry::Host);
        assert_eq!(cell.registry(), Some(Registry::Host));
        cell.settle_registry(Registry::HostGateway);
        assert_eq!(other.registry(), Some(Registry::HostGateway));
        assert_eq!(
            Reach::of_code(other.0.load(Ordering::Acquire)),
            Reach::Direct
        );
        other.settle_registry(Registry::Stack);
        assert_eq!(cell.registry(), Some(Registry::Stack));
        assert_eq!(
            serde_json::to_string(&Registry::HostGateway).unwrap(),
            "\"host-gateway\""
        );
        assert_eq!(
            Reach::of_code(cell.0.load(Ordering::Acquire)),
            Reach::Direct
        );
        assert_eq!(
            serde_json::to_string(&Registry::Stack).unwrap(),
            "\"stack\""
        );
    }

    #[test]
    fn a_rootless_engine_is_presumed_published() {
        assert_eq!(
            Reach::presumed("unix:///run/user/1000/docker.sock", true),
            Reach::Published
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let host = format!("unix://{}", socket.display());
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        // A socket of this process's user: rootless unless that is root.
        assert_eq!(Reach::socket_is_rootless(&host), !root);
        if root {
            std::os::unix::fs::chown(&socket, Some(65534), None).unwrap();
            assert!(Reach::socket_is_rootless(&host));
        }
        assert!(!Reach::socket_is_rootless("unix:///no/such/socket"));
    }

    #[test]
    fn a_remote_engine_is_presumed_reachable_by_exec_only() {
        assert_eq!(Reach::presumed("tcp://10.0.0.2:2375", false), Reach::Exec);
        assert_eq!(
            Reach::presumed("https://engine.example:2376", false),
            Reach::Exec
        );
        assert_eq!(Reach::presumed("ssh://me@box", false), Reach::Exec);
        assert_eq!(
            Reach::presumed("tcp://127.0.0.1:2375", false),
            Reach::Published
        );
        assert_eq!(
            Reach::presumed("tcp://localhost:2375", false),
            Reach::Published
        );
        assert_eq!(Reach::presumed("tcp://[::1]:2375", false), Reach::Published);
        assert_eq!(
            Reach::presumed("npipe:////./pipe/docker_engine", false),
            Reach::Published
        );
    }
}
