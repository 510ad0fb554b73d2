//! Where a stack's registry answers, and what it holds for `devstack
//! routes`: each route the proxy serves, its URL and the live instances
//! behind it.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::{state, LoadedStack};
use crate::etcd::rpc::{self, Client, Timeouts};
use crate::router::{view, Instance, Layout, Registry};
use crate::spec::Etcd;
use crate::ui::{exit, Failed};

/// Where etcd quick looks go without `--endpoints`: the etcd of the stack's
/// running routing path, else its real cluster, else the default client URL.
pub fn look_endpoints(loaded: Option<&LoadedStack>) -> Vec<String> {
    let found = loaded.and_then(|loaded| match state::read(&loaded.project) {
        Ok(Some(state)) => Some(state.endpoints),
        _ => match &loaded.stack.discovery.etcd {
            Etcd::External { endpoints } => Some(endpoints.clone()),
            Etcd::Embedded => None,
        },
    });
    match found {
        Some(endpoints) if !endpoints.is_empty() => endpoints,
        _ => vec!["http://127.0.0.1:2379".to_string()],
    }
}

/// The routes of a running stack, as its registry serves them.
#[derive(Debug, Serialize)]
pub struct Routes {
    pub project: String,
    /// Where this copy's proxy listens (a copy may have been given a free port).
    pub listen: SocketAddr,
    /// The registry's etcd endpoints.
    pub endpoints: Vec<String>,
    pub routes: Vec<Route>,
}

/// One route and the instances behind it (none: the proxy answers 503).
#[derive(Debug, Serialize)]
pub struct Route {
    pub host: Option<String>,
    pub path: Option<String>,
    pub strip_prefix: bool,
    pub service: String,
    /// What a developer types to reach it: `http://api.x.localhost:8080/v1`.
    pub url: String,
    pub instances: Vec<Instance>,
}

/// Reads the registry of the running stack (or of its real cluster).
pub async fn routes(loaded: &LoadedStack) -> anyhow::Result<Routes> {
    let stack = &loaded.stack;
    let running = state::read(&loaded.project)?;
    let endpoints = match (&running, &stack.discovery.etcd) {
        (Some(s), _) => s.endpoints.clone(),
        (None, Etcd::External { endpoints }) => endpoints.clone(),
        (None, Etcd::Embedded) => {
            return Err(Failed::new(
                exit::FAILURE,
                format!(
                    "`{}` is not running (no devstack process serves its registry); start it with `devstack up`",
                    loaded.project
                ),
            )
            .into())
        }
    };
    let timeouts = Timeouts::new(Duration::from_secs(2), Duration::from_secs(5));
    let unreachable = |e: rpc::Error| {
        Failed::new(
            exit::FAILURE,
            format!("etcd at {}: {e}", endpoints.join(",")),
        )
    };
    let mut client = Client::connect(&endpoints, timeouts)
        .await
        .map_err(unreachable)?;
    let layout = Layout::new(&stack.discovery, &loaded.project);
    let resp = client
        .get(layout.listing(), true)
        .await
        .map_err(unreachable)?;
    let registry = Registry::from_kvs(
        layout.prefix(),
        resp.kvs.iter().map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        }),
    );
    let listen = running
        .as_ref()
        .and_then(|s| s.listen.parse().ok())
        .unwrap_or(stack.proxy.listen);
    let routes = view(stack, &loaded.project, &registry)
        .routes
        .into_iter()
        .map(|r| Route {
            url: url_of(listen, r.host.as_deref(), r.path.as_deref()),
            instances: registry.instances(&r.service).to_vec(),
            host: r.host,
            path: r.path,
            strip_prefix: r.strip_prefix,
            service: r.service,
        })
        .collect();
    Ok(Routes {
        project: loaded.project.to_string(),
        listen,
        endpoints,
        routes,
    })
}

fn url_of(listen: SocketAddr, host: Option<&str>, path: Option<&str>) -> String {
    let host = host
        .map(str::to_string)
        .unwrap_or_else(|| listen.ip().to_string());
    format!("http://{host}:{}{}", listen.port(), path.unwrap_or("/"))
}
