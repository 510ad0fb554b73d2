//! Where a copy's proxy listens on the host. The stack's own copy keeps its
//! `proxy.listen` (default 127.0.0.1:8080); a copy under another project name
//! whose files do not set `listen`, a `devstack test` copy, and a stack that
//! asks for port 0 get a free loopback port, chosen once when `up` starts and
//! kept while its routing path runs (`routing.json` records it, and the agent
//! is handed it). A fixed port that is taken is an error before anything
//! starts, naming the devstack copy that holds it when there is one.

use std::net::{SocketAddr, TcpListener};

use super::{state, LoadedStack};
use crate::engine::Engine;
use crate::plan::names::{network_name, ProjectName};
use crate::ui::{exit, Failed};

/// How `up` hands the address it chose to the routing agent it spawns.
pub const AGENT_ENV: &str = "DEVSTACK_AGENT_LISTEN";

/// Whether this copy's proxy gets a free port rather than the files' one.
pub fn wants_free_port(loaded: &LoadedStack) -> bool {
    let proxy = &loaded.stack.proxy;
    proxy.listen.port() == 0
        || (loaded.project.as_str() != loaded.stack.name && !proxy.listen_given)
}

/// Whether this copy wants a free port and has not been given one yet.
pub fn unsettled(loaded: &LoadedStack) -> bool {
    wants_free_port(loaded) && loaded.stack.proxy.listen == loaded.file_listen
}

/// Settles `loaded.stack.proxy.listen` for an `up` (or `devstack test`,
/// with `free`): the address of the routing path that runs, else a free
/// port when one is wanted, else the fixed one, checked to be free.
pub async fn resolve(engine: &Engine, loaded: &mut LoadedStack, free: bool) -> anyhow::Result<()> {
    if let Some(running) = state::read(&loaded.project)?
        .and_then(|s| s.listen.parse::<SocketAddr>().ok())
        .filter(|a| a.port() != 0)
    {
        loaded.stack.proxy.listen = running;
        return Ok(());
    }
    if free || wants_free_port(loaded) {
        loaded.stack.proxy.listen = free_port(loaded.stack.proxy.listen)?;
        return Ok(());
    }
    check_free(engine, &loaded.project, loaded.stack.proxy.listen).await
}

/// The agent's address: the one its spawner chose, else what `resolve`
/// would pick without asking the engine (an agent started by hand).
pub fn for_agent(loaded: &mut LoadedStack) -> anyhow::Result<()> {
    if let Some(text) = std::env::var_os(AGENT_ENV) {
        let text = text.to_string_lossy();
        let addr = text.parse::<SocketAddr>().map_err(|_| {
            Failed::new(
                exit::USAGE,
                format!("{AGENT_ENV}: `{text}` is not an address to listen on"),
            )
        })?;
        loaded.stack.proxy.listen = addr;
        return Ok(());
    }
    if wants_free_port(loaded) {
        loaded.stack.proxy.listen = free_port(loaded.stack.proxy.listen)?;
    }
    Ok(())
}

/// A port nobody listens on now at `listen`'s address. Held for a moment
/// only: the proxy container binds it right after.
fn free_port(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    let probe = TcpListener::bind(SocketAddr::new(listen.ip(), 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| {
            Failed::new(
                exit::ROUTING,
                format!("no free port for the proxy on {}: {e}", listen.ip()),
            )
        })?;
    Ok(probe)
}

/// A fixed `listen` that another process holds is an error now, before
/// any container starts; one that the project's own proxy holds is fine.
async fn check_free(
    engine: &Engine,
    project: &ProjectName,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    if let Some((other, pid)) = devstack_holder(project, listen) {
        return Err(Failed::new(
            exit::ROUTING,
            format!(
                "{listen}, where the proxy of `{project}` listens, is taken by the devstack copy `{other}` (process {pid}): \
                 stop it (`devstack -p {other} down`), or run this copy under another project name (`-p`) with a stack file that does not set `proxy.listen`"
            ),
        )
        .into());
    }
    let taken = match TcpListener::bind(listen) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => e,
        // Not ours to judge (an address this host does not have, say): the
        // proxy's start reports it.
        Err(_) => return Ok(()),
    };
    let own = crate::engine::proxy::proxy_container_name(project.as_str());
    if let Ok(status) = engine.inspect(&own, &network_name(project.as_str())).await {
        if status
            .published
            .iter()
            .any(|p| p.host_port == listen.port())
        {
            return Ok(());
        }
    }
    Err(Failed::new(
        exit::ROUTING,
        format!(
            "{listen}, where the proxy of `{project}` listens, is taken by another program ({taken}): \
             stop it, or set `proxy.listen` to another port (`0` picks a free one)"
        ),
    )
    .into())
}

/// Another project whose running routing path records this port.
fn devstack_holder(project: &ProjectName, listen: SocketAddr) -> Option<(ProjectName, u32)> {
    state::projects()
        .into_iter()
        .filter(|p| p != project)
        .find_map(|p| {
            let running = state::read(&p).ok().flatten()?;
            let addr = running.listen.parse::<SocketAddr>().ok()?;
            let overlaps = addr.ip() == listen.ip()
                || addr.ip().is_unspecified()
                || listen.ip().is_unspecified();
            (addr.port() == listen.port() && overlaps).then_some((p, running.owner.pid))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(yaml: &str, project: &str) -> LoadedStack {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let file = dir.path().join("devstack.yaml");
        std::fs::write(&file, yaml).expect("written");
        let project = ProjectName::new(project).expect("a project name");
        LoadedStack::load(vec![file], Some(&project)).expect("a valid stack")
    }

    const PLAIN: &str = "name: shop\nservices:\n  web:\n    image: nginx\n";

    #[test]
    fn the_stacks_own_copy_keeps_its_listen_and_another_copy_gets_a_free_port() {
        assert!(!wants_free_port(&loaded(PLAIN, "shop")));
        let mut copy = loaded(PLAIN, "shop-b");
        assert!(wants_free_port(&copy));
        assert!(unsettled(&copy), "no port chosen yet: the agent chooses");
        copy.stack.proxy.listen = "127.0.0.1:40123".parse().expect("an address");
        assert!(!unsettled(&copy), "chosen by `up`, handed to the agent");
        let fixed = format!("{PLAIN}proxy:\n  listen: 127.0.0.1:9123\n");
        assert!(
            !wants_free_port(&loaded(&fixed, "shop-b")),
            "set by the files"
        );
        let zero = format!("{PLAIN}proxy:\n  listen: 127.0.0.1:0\n");
        assert!(wants_free_port(&loaded(&zero, "shop")), "port 0");
    }

    #[test]
    fn a_free_port_keeps_the_address_and_is_not_zero() {
        let addr = free_port("127.0.0.1:0".parse().expect("an address")).expect("a port");
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_ne!(addr.port(), 0);
    }
}
