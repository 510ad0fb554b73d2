//! `devstack routes [--json]`: the routes the proxy serves and the live
//! instances behind them, read from the registry (etcd) of the running stack.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};

use super::args::{GlobalArgs, RoutesArgs};
use super::stack::load_stack;
use super::{exit, Failed};
use crate::controller::state;
use crate::router::{view, Layout, Registry};
use crate::spec::Etcd;

pub async fn run(global: &GlobalArgs, args: RoutesArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
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
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    let unreachable = |e: etcd_client::Error| {
        Failed::new(
            exit::FAILURE,
            format!("etcd at {}: {e}", endpoints.join(",")),
        )
    };
    let mut client = Client::connect(&endpoints, Some(options))
        .await
        .map_err(unreachable)?;
    let layout = Layout::new(&stack.discovery, &loaded.project);
    let resp = client
        .get(layout.listing(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(unreachable)?;
    let registry = Registry::from_kvs(
        layout.prefix(),
        resp.kvs().iter().map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        }),
    );
    let v = view(stack, &loaded.project, &registry);
    // Where this copy's proxy listens: a copy may have been given a free port.
    let listen = running
        .as_ref()
        .and_then(|s| s.listen.parse().ok())
        .unwrap_or(stack.proxy.listen);
    if args.json {
        let routes: Vec<serde_json::Value> = v
            .routes
            .iter()
            .map(|r| {
                serde_json::json!({
                    "host": r.host,
                    "path": r.path,
                    "strip_prefix": r.strip_prefix,
                    "service": r.service,
                    "url": url_of(listen, r.host.as_deref(), r.path.as_deref()),
                    "instances": registry.instances(&r.service),
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "project": loaded.project,
                "listen": listen.to_string(),
                "endpoints": endpoints,
                "routes": routes,
            }))?
        );
        return Ok(exit::OK);
    }
    outln!("{:<48} {:<16} INSTANCES", "ROUTE", "SERVICE");
    for r in &v.routes {
        let instances = registry.instances(&r.service);
        let list = if instances.is_empty() {
            "none (503)".to_string()
        } else {
            instances
                .iter()
                .map(|i| format!("{}:{}", i.address, i.port))
                .collect::<Vec<_>>()
                .join(", ")
        };
        outln!(
            "{:<48} {:<16} {list}",
            url_of(listen, r.host.as_deref(), r.path.as_deref()),
            r.service
        );
    }
    Ok(exit::OK)
}

/// What a developer types to reach a route: `http://api.x.localhost:8080/v1`.
fn url_of(listen: std::net::SocketAddr, host: Option<&str>, path: Option<&str>) -> String {
    let host = host
        .map(str::to_string)
        .unwrap_or_else(|| listen.ip().to_string());
    format!("http://{host}:{}{}", listen.port(), path.unwrap_or("/"))
}
