//! `devstack etcd`: the embedded etcd server on its own, and quick looks at a store.

use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};

use super::args::{
    DelArgs, Endpoints, EtcdArgs, EtcdCommand, EtcdWatchArgs, GetArgs, GlobalArgs, LsArgs, PutArgs,
    ServeArgs,
};
use super::{exit, Failed};
use crate::controller::{on_signals, Signals, Tasks};
use crate::etcd::{Server, ServerConfig};

pub async fn run(global: &GlobalArgs, args: EtcdArgs) -> anyhow::Result<u8> {
    match args.command {
        EtcdCommand::Serve(a) => serve(a).await,
        EtcdCommand::Get(mut a) => {
            a.endpoints.resolve(global);
            get(a).await
        }
        EtcdCommand::Put(mut a) => {
            a.endpoints.resolve(global);
            put(a).await
        }
        EtcdCommand::Del(mut a) => {
            a.endpoints.resolve(global);
            del(a).await
        }
        EtcdCommand::Watch(mut a) => {
            a.endpoints.resolve(global);
            watch(a).await
        }
        EtcdCommand::Ls(mut a) => {
            a.endpoints.resolve(global);
            ls(a).await
        }
    }
}

impl Endpoints {
    /// Without `--endpoints`, a quick look goes where the stack's registry is:
    /// the etcd of its running routing path, else its real cluster.
    fn resolve(&mut self, global: &GlobalArgs) {
        if !self.endpoints.is_empty() {
            return;
        }
        if let Ok(loaded) = super::stack::try_load(global) {
            if let Ok(Some(state)) = crate::controller::state::read(&loaded.project) {
                self.endpoints = state.endpoints;
            } else if let crate::spec::Etcd::External { endpoints } = &loaded.stack.discovery.etcd {
                self.endpoints = endpoints.clone();
            }
        }
        if self.endpoints.is_empty() {
            self.endpoints = vec!["http://127.0.0.1:2379".to_string()];
        }
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<u8> {
    let mut config = if a.in_memory {
        ServerConfig::in_memory(a.listen)
    } else {
        ServerConfig::new(a.listen, &a.data_dir)
    };
    config.name = a.name;
    config.advertise_client_urls = a.advertise_client_urls;
    config.max_request_bytes = a.max_request_bytes;
    config.quota_backend_bytes = a.quota_backend_bytes;
    let server = Server::start(config)
        .await
        .map_err(|e| Failed::new(exit::FAILURE, e.to_string()))?;
    let url = server.client_url();
    let place = if a.in_memory {
        "in memory".to_string()
    } else {
        format!("data in {}", a.data_dir.display())
    };
    sayln!(
        "etcd serving on {url} ({place}, revision {}, started in {} ms)",
        server.revision(),
        server.startup_time().as_millis()
    );
    sayln!("  etcdctl --endpoints={url} get '' --prefix");
    // Ctrl-C or SIGTERM stops it; a second one while it stops exits at once.
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

async fn connect(e: &Endpoints) -> anyhow::Result<Client> {
    let endpoints = e.endpoints.join(",");
    let client = tokio::time::timeout(
        Duration::from_secs(5),
        Client::connect(e.endpoints.clone(), None),
    )
    .await
    .map_err(|_| {
        Failed::new(
            exit::FAILURE,
            format!("no etcd answered at {endpoints} within 5 s"),
        )
    })?
    .map_err(|err| {
        Failed::new(
            exit::FAILURE,
            format!("cannot reach etcd at {endpoints}: {err}"),
        )
    })?;
    sayln!("etcd at {endpoints} (etcdctl --endpoints={endpoints} ...)");
    Ok(client)
}

fn etcd_failed(endpoints: &Endpoints, err: etcd_client::Error) -> anyhow::Error {
    Failed::new(
        exit::FAILURE,
        format!("etcd at {}: {err}", endpoints.endpoints.join(",")),
    )
    .into()
}

fn kv_json(kv: &etcd_client::KeyValue) -> serde_json::Value {
    serde_json::json!({
        "key": String::from_utf8_lossy(kv.key()),
        "value": String::from_utf8_lossy(kv.value()),
        "create_revision": kv.create_revision(),
        "mod_revision": kv.mod_revision(),
        "version": kv.version(),
        "lease": kv.lease(),
    })
}

async fn get(a: GetArgs) -> anyhow::Result<u8> {
    let mut client = connect(&a.endpoints).await?;
    let opts = a.prefix.then(|| GetOptions::new().with_prefix());
    let resp = client
        .get(a.key.as_str(), opts)
        .await
        .map_err(|e| etcd_failed(&a.endpoints, e))?;
    if a.json {
        let kvs: Vec<_> = resp.kvs().iter().map(kv_json).collect();
        let rev = resp.header().map_or(0, |h| h.revision());
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "revision": rev, "kvs": kvs }))?
        );
    } else {
        for kv in resp.kvs() {
            outln!("{}", String::from_utf8_lossy(kv.key()));
            outln!("{}", String::from_utf8_lossy(kv.value()));
        }
    }
    // Like `etcdctl get`, a missing key is not an error; scripts test the output.
    Ok(exit::OK)
}

async fn put(a: PutArgs) -> anyhow::Result<u8> {
    let mut client = connect(&a.endpoints).await?;
    let resp = client
        .put(a.key.as_str(), a.value.as_str(), None::<PutOptions>)
        .await
        .map_err(|e| etcd_failed(&a.endpoints, e))?;
    outln!(
        "OK (revision {})",
        resp.header().map_or(0, |h| h.revision())
    );
    Ok(exit::OK)
}

async fn del(a: DelArgs) -> anyhow::Result<u8> {
    let mut client = connect(&a.endpoints).await?;
    let opts = a
        .prefix
        .then(|| etcd_client::DeleteOptions::new().with_prefix());
    let resp = client
        .delete(a.key.as_str(), opts)
        .await
        .map_err(|e| etcd_failed(&a.endpoints, e))?;
    outln!("{}", resp.deleted());
    Ok(exit::OK)
}

async fn watch(a: EtcdWatchArgs) -> anyhow::Result<u8> {
    let mut client = connect(&a.endpoints).await?;
    let mut opts = WatchOptions::new();
    if a.prefix {
        opts = opts.with_prefix();
    }
    if let Some(rev) = a.rev {
        opts = opts.with_start_revision(rev);
    }
    let mut stream = client
        .watch(a.key.as_str(), Some(opts))
        .await
        .map_err(|e| etcd_failed(&a.endpoints, e))?;
    let tasks = Tasks::new();
    let _signals = on_signals(&tasks, Signals::Interrupt);
    let result = follow(&a, &mut stream, tasks.stop_token()).await;
    tasks.join().await;
    result
}

/// Prints the watch's events until it ends or `stop` (Ctrl-C) fires.
async fn follow(
    a: &EtcdWatchArgs,
    stream: &mut etcd_client::WatchStream,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<u8> {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(exit::INTERRUPTED),
            msg = stream.message() => msg.map_err(|e| etcd_failed(&a.endpoints, e))?,
        };
        let Some(resp) = msg else { return Ok(exit::OK) };
        if resp.canceled() {
            return Err(Failed::new(
                exit::FAILURE,
                format!(
                    "watch canceled by the server{}",
                    if resp.compact_revision() > 0 {
                        format!(": revision {} is compacted", resp.compact_revision())
                    } else if resp.cancel_reason().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", resp.cancel_reason())
                    }
                ),
            )
            .into());
        }
        for ev in resp.events() {
            let kind = match ev.event_type() {
                EventType::Put => "PUT",
                EventType::Delete => "DELETE",
            };
            let Some(kv) = ev.kv() else { continue };
            if a.json {
                let mut v = kv_json(kv);
                v["type"] = kind.into();
                outln!("{}", serde_json::to_string(&v)?);
            } else {
                outln!("{kind}");
                outln!("{}", String::from_utf8_lossy(kv.key()));
                if ev.event_type() == EventType::Put {
                    outln!("{}", String::from_utf8_lossy(kv.value()));
                }
            }
        }
    }
}

async fn ls(a: LsArgs) -> anyhow::Result<u8> {
    let mut client = connect(&a.endpoints).await?;
    let opts = GetOptions::new().with_keys_only();
    let opts = if a.prefix.is_empty() {
        opts.with_from_key()
    } else {
        opts.with_prefix()
    };
    let key = if a.prefix.is_empty() {
        "\0"
    } else {
        a.prefix.as_str()
    };
    let resp = client
        .get(key, Some(opts))
        .await
        .map_err(|e| etcd_failed(&a.endpoints, e))?;
    let keys: Vec<String> = resp
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&keys)?);
    } else {
        for k in keys {
            outln!("{k}");
        }
    }
    Ok(exit::OK)
}
