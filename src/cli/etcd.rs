//! `devstack etcd`: the embedded etcd server on its own, and quick looks at a
//! store; the work is `controller::serve` and `etcd::client`.

use super::args::{Endpoints, EtcdArgs, EtcdCommand, GlobalArgs, ServeArgs};
use super::{exit, Failed};
use crate::controller::registry::look_endpoints;
use crate::controller::serve::{follow, serve};
use crate::etcd::client::{Look, LookError};
use crate::etcd::ServerConfig;

pub async fn run(global: &GlobalArgs, args: EtcdArgs) -> anyhow::Result<u8> {
    let connect = |e: &Endpoints| {
        // Without `--endpoints`, where the stack's registry is.
        let endpoints = if e.endpoints.is_empty() {
            look_endpoints(super::stack::try_load(global).ok().as_ref())
        } else {
            e.endpoints.clone()
        };
        async move {
            let look = Look::connect(&endpoints).await.map_err(failed)?;
            let at = look.endpoints();
            sayln!("etcd at {at} (etcdctl --endpoints={at} ...)");
            anyhow::Ok(look)
        }
    };
    match args.command {
        EtcdCommand::Serve(a) => serve_args(a).await,
        EtcdCommand::Get(a) => {
            let (revision, kvs) = connect(&a.endpoints)
                .await?
                .get(&a.key, a.prefix)
                .await
                .map_err(failed)?;
            if a.json {
                let v = serde_json::json!({ "revision": revision, "kvs": kvs });
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for kv in kvs {
                    outln!("{}\n{}", kv.key, kv.value);
                }
            }
            // Like `etcdctl get`, a missing key is not an error; scripts test the output.
            Ok(exit::OK)
        }
        EtcdCommand::Put(a) => {
            let rev = connect(&a.endpoints)
                .await?
                .put(&a.key, &a.value)
                .await
                .map_err(failed)?;
            outln!("OK (revision {rev})");
            Ok(exit::OK)
        }
        EtcdCommand::Del(a) => {
            let n = connect(&a.endpoints)
                .await?
                .del(&a.key, a.prefix)
                .await
                .map_err(failed)?;
            outln!("{n}");
            Ok(exit::OK)
        }
        EtcdCommand::Ls(a) => {
            let keys = connect(&a.endpoints)
                .await?
                .ls(&a.prefix)
                .await
                .map_err(failed)?;
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for k in keys {
                    outln!("{k}");
                }
            }
            Ok(exit::OK)
        }
        EtcdCommand::Watch(a) => {
            let look = connect(&a.endpoints).await?;
            let watch = look.watch(&a.key, a.prefix, a.rev).await.map_err(failed)?;
            follow(watch, |events| {
                for ev in events {
                    let kind = if ev.put { "PUT" } else { "DELETE" };
                    if a.json {
                        let mut v = serde_json::to_value(&ev.kv)?;
                        v["type"] = kind.into();
                        outln!("{}", serde_json::to_string(&v)?);
                    } else if ev.put {
                        outln!("{kind}\n{}\n{}", ev.kv.key, ev.kv.value);
                    } else {
                        outln!("{kind}\n{}", ev.kv.key);
                    }
                }
                Ok(())
            })
            .await
        }
    }
}

fn failed(e: LookError) -> anyhow::Error {
    Failed::new(exit::FAILURE, e.to_string()).into()
}

async fn serve_args(a: ServeArgs) -> anyhow::Result<u8> {
    let mut config = if a.in_memory {
        ServerConfig::in_memory(a.listen)
    } else {
        ServerConfig::new(a.listen, &a.data_dir)
    };
    config.name = a.name;
    config.advertise_client_urls = a.advertise_client_urls;
    config.max_request_bytes = a.max_request_bytes;
    config.quota_backend_bytes = a.quota_backend_bytes;
    let place = if a.in_memory {
        "in memory".to_string()
    } else {
        format!("data in {}", a.data_dir.display())
    };
    serve(config, |server| {
        let url = server.client_url();
        sayln!(
            "etcd serving on {url} ({place}, revision {}, started in {} ms)",
            server.revision(),
            server.startup_time().as_millis()
        );
        sayln!("  etcdctl --endpoints={url} get '' --prefix");
    })
    .await
}
