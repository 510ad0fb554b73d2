//! The router loop: the confd part of the pipeline, running.
//!
//! One task, one `select!` over a closed set of triggers (etcd watch
//! responses, the debounce deadline, the proxy container dying, an edited
//! stack file's routes, the stop signal). Every apply is awaited in that task, so checks and reloads are
//! serialized by construction: never two at once, never a pile-up.
//!
//! An apply renders the whole registry (level-triggered: a lost watch event
//! cannot leave the config wrong, the next apply renders everything again),
//! compares with the live config, and then either does nothing, sends
//! runtime API commands (only servers moved), or checks the new config with
//! `haproxy -c` inside the proxy container, uploads it and reloads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::debounce::Debounce;
use super::gotemplate::{self, Store};
use super::layout::Layout;
use super::nginx::{self as nginx_path, Failure};
use super::registry::Registry;
use super::render::{builtin_template, render_for, view_keeping, RenderError, View};
use crate::engine::control::{answers, probe_reach};
use crate::engine::events::ContainerEventKind;
use crate::engine::nginx::{self, read_control, StreamModule};
use crate::engine::proxy::{
    self, master_cli, parse_show_proc, CheckError, ProcState, ProxyContainer, ProxySpec,
};
use crate::engine::reach::Reach;
use crate::engine::registry::EtcdTarget;
use crate::engine::runtime::{runtime_commands, runtime_failure};
use crate::engine::{Engine, EngineError};
use crate::etcd::pb::etcdserverpb::WatchResponse;
use crate::etcd::pb::mvccpb::event::EventType;
use crate::etcd::rpc::{self, Client, Timeouts};
use crate::plan::ObservedState;
use crate::spec::confd::Resource;
use crate::spec::{ProxyKind, Stack};

/// Everything the router needs, decided before it starts.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub stack: Stack,
    pub project: String,
    /// etcd client URLs (the embedded server's loopback URL, or the cluster's).
    pub endpoints: Vec<String>,
    pub proxy: ProxySpec,
    /// Where containers' `etcd:2379` should lead: the proxy forwards its port
    /// 2379 there (the embedded server on the network's gateway, say, or
    /// `host.docker.internal:<port>`).
    pub etcd_for_containers: Option<EtcdTarget>,
    /// The registry must be quiet this long before a render...
    pub quiet: Duration,
    /// ...but a burst never delays a render longer than this.
    pub max_delay: Duration,
}

impl RouterConfig {
    /// The defaults for a stack: its proxy image (or devstack's), its listen
    /// address, and an alias `<service>.internal` for every service.
    pub fn new(stack: &Stack, project: &str, endpoints: Vec<String>) -> RouterConfig {
        RouterConfig {
            proxy: proxy_spec(stack, project, false),
            stack: stack.clone(),
            project: project.to_string(),
            endpoints,
            etcd_for_containers: None,
            quiet: Duration::from_millis(5),
            max_delay: Duration::from_millis(100),
        }
    }

    /// Makes containers' `etcd:2379` go through the proxy to `target`.
    pub fn with_etcd_for_containers(mut self, target: impl Into<EtcdTarget>) -> RouterConfig {
        self.proxy = proxy_spec(&self.stack, &self.project, true);
        self.etcd_for_containers = Some(target.into());
        self
    }
}

/// The proxy container a stack asks for.
pub fn proxy_spec(stack: &Stack, project: &str, etcd_alias: bool) -> ProxySpec {
    let mut aliases: Vec<String> = stack
        .services
        .keys()
        .map(|s| format!("{s}.internal"))
        .collect();
    // A stack that runs its own etcd container keeps the name for it.
    if etcd_alias && stack.unit("etcd").is_none() {
        aliases.push("etcd".into());
    }
    ProxySpec {
        project: project.to_string(),
        kind: stack.proxy.kind,
        image: stack
            .proxy
            .image
            .clone()
            .unwrap_or_else(|| proxy::default_image(stack.proxy.kind).to_string()),
        platform: stack.proxy.platform.clone(),
        listen: stack.proxy.listen,
        aliases,
    }
}

/// How an apply changed the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "how")]
pub enum Change {
    /// The render equals the live config.
    Unchanged,
    /// Only servers moved: applied through the runtime API, no reload.
    Runtime { commands: Vec<String> },
    /// Checked with `haproxy -c` (or `nginx -t`), uploaded and reloaded.
    Reload,
}

/// What the router reports, for `up`'s output, `--json`, and tests.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum RouterEvent {
    /// The proxy container runs (created, adopted or restarted).
    ProxyStarted { container: String, restarted: bool },
    /// The registry at `revision` is what the proxy serves now.
    Applied {
        #[serde(flatten)]
        change: Change,
        revision: i64,
        instances: usize,
        #[serde(with = "millis")]
        took: Duration,
    },
    /// The template failed to render; the last good config stays.
    RenderFailed {
        template: Option<PathBuf>,
        line: Option<usize>,
        message: String,
    },
    /// The proxy's checker (`haproxy -c`, `nginx -t`) refused the rendered
    /// config; the last good config stays.
    CheckFailed {
        /// Whose checker.
        proxy: ProxyKind,
        line: Option<usize>,
        message: String,
        /// The offending config line, as rendered.
        text: Option<String>,
    },
    /// The proxy did not take a checked config at its reload (nginx could
    /// not apply it, HAProxy's new worker failed): the previous good config
    /// is back in place when `restored`, and the proxy serves it still.
    ReloadFailed { message: String, restored: bool },
    /// etcd did not answer; the proxy keeps its config while the router retries.
    EtcdUnavailable {
        message: String,
        #[serde(with = "millis")]
        retry_in: Duration,
    },
    /// Something about the proxy container failed; retried.
    ProxyTrouble { message: String },
    /// A confd resource's `check_cmd` refused its rendered file; the last
    /// good file stays.
    ConfdCheckFailed {
        /// The resource file (`haproxy.toml`).
        resource: String,
        /// The command as run, `{{.src}}` replaced by the staged file.
        command: String,
        /// What it printed.
        output: String,
    },
    /// A confd resource's file changed and is installed. For the HAProxy
    /// configuration devstack's hitless path applied it, standing in for
    /// the resource's `reload_cmd`.
    ConfdInstalled {
        resource: String,
        dest: String,
        reload_cmd: Option<String>,
    },
    /// A key under the prefix is left out of the configuration (reported once
    /// while it stays): its value is not a usable instance, or it holds a
    /// control character. `key` may hold anything; print it with `{:?}`.
    RegistrySkipped { key: String, reason: String },
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// Why the router could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot start the proxy of `{project}`: {source}")]
    Proxy {
        project: String,
        #[source]
        source: EngineError,
    },
    #[error("cannot render the proxy configuration of `{project}`: {message}")]
    Render { project: String, message: String },
    #[error("the proxy of `{project}` did not answer on its master CLI at {addr}: {message}")]
    ProxyUnreachable {
        project: String,
        addr: SocketAddr,
        message: String,
    },
    /// HAProxy exited before it served: its own words say why (a config it
    /// cannot load in that image, a socket it cannot bind, a user it lacks).
    #[error(
        "the proxy `{container}` of `{project}` exited ({status}){}",
        proxy_output(logs)
    )]
    ProxyExited {
        project: String,
        container: String,
        /// `exit code N`, as the engine reported it.
        status: String,
        /// The proxy's last lines of output.
        logs: Vec<String>,
    },
}

fn proxy_output(logs: &[String]) -> String {
    if logs.is_empty() {
        return "; it printed nothing".into();
    }
    let mut text = String::from("; its last output:");
    for line in logs {
        text.push_str("\n    ");
        text.push_str(line);
    }
    text
}

/// A running router.
pub struct RouterHandle {
    events: broadcast::Sender<RouterEvent>,
    task: tokio::task::JoinHandle<()>,
    /// The proxy container as started.
    pub proxy: ProxyContainer,
}

impl RouterHandle {
    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RouterEvent> {
        self.events.subscribe()
    }

    /// Waits for the loop to end (after the cancel token fired).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Starts the proxy container and the router loop. Returns once the proxy
/// answers; the loop then follows etcd until `cancel` fires. Each stack
/// `stacks` publishes (an edit of the stack files) has its services' routes
/// (and the template) applied like a registry change; discovery and the
/// proxy container stay as they started.
pub async fn start(
    engine: Engine,
    config: RouterConfig,
    stacks: tokio::sync::watch::Receiver<Arc<Stack>>,
    cancel: CancellationToken,
) -> Result<RouterHandle, RouterError> {
    Ok(prepare(engine, config).await?.run(stacks, cancel))
}

/// A router whose proxy runs and answers (and the stack's reach is
/// decided), before its loop reads etcd: the routing path decides where the
/// registry runs in between ([`PreparedRouter::move_registry`]).
pub struct PreparedRouter {
    engine: Engine,
    kind: ProxyKind,
    stream: Option<StreamModule>,
    config: RouterConfig,
    events: broadcast::Sender<RouterEvent>,
    proxy: ProxyContainer,
    gateway: IpAddr,
}

/// Starts (or adopts) the proxy container and waits until it answers on its
/// control port, deciding the stack's reach on it; the loop is not started
/// ([`PreparedRouter::run`]).
pub async fn prepare(engine: Engine, config: RouterConfig) -> Result<PreparedRouter, RouterError> {
    let (events, _) = broadcast::channel(256);
    let kind = config.stack.proxy.kind;
    let base = render_for(
        kind,
        builtin_template(kind),
        &super::view(&config.stack, &config.project, &Registry::default()),
    )
    .map_err(|e| RouterError::Render {
        project: config.project.clone(),
        message: e.to_string(),
    })?;
    // The control section admits the gateway only; without one devstack
    // could not reach the proxy at all.
    let gateway = engine
        .network_gateway(&config.project)
        .await
        .map_err(|source| RouterError::Proxy {
            project: config.project.clone(),
            source,
        })?
        .ok_or_else(|| RouterError::Render {
            project: config.project.clone(),
            message: "the stack network has no IPv4 gateway for the control port to admit".into(),
        })?;
    let (proxy, stream) = match kind {
        ProxyKind::Haproxy => {
            let base = devstack_sections(&base, config.etcd_for_containers.as_ref(), gateway);
            let mut proxy = engine
                .ensure_proxy(&config.proxy, &base)
                .await
                .map_err(|source| RouterError::Proxy {
                    project: config.project.clone(),
                    source,
                })?;
            decide_reach(&engine, &config.project, &mut proxy).await?;
            wait_for_proxy(&engine, &config.project, &proxy).await?;
            (proxy, None)
        }
        ProxyKind::Nginx => {
            let (mut proxy, stream) = start_nginx(&engine, &config, &base, gateway).await?;
            decide_reach(&engine, &config.project, &mut proxy).await?;
            (proxy, Some(stream))
        }
    };
    let _ = events.send(RouterEvent::ProxyStarted {
        container: proxy.name.clone(),
        restarted: false,
    });
    Ok(PreparedRouter {
        engine,
        kind,
        stream,
        config,
        events,
        proxy,
        gateway,
    })
}

impl PreparedRouter {
    /// The proxy container, running and answering.
    pub fn proxy(&self) -> &ProxyContainer {
        &self.proxy
    }

    /// The stack network's gateway.
    pub fn gateway(&self) -> IpAddr {
        self.gateway
    }

    /// The registry moved (into a container of the stack, or to where
    /// `host.docker.internal` leads): the loop reads `endpoints`, and the
    /// proxy's `etcd:2379` forward leads to `for_containers` from the first
    /// apply on (the proxy keeps its `etcd` alias, so containers reach it as
    /// before).
    pub fn move_registry(&mut self, endpoints: Vec<String>, for_containers: EtcdTarget) {
        self.config.endpoints = endpoints;
        self.config.etcd_for_containers = Some(for_containers);
    }

    /// Starts the loop: it follows etcd until `cancel` fires.
    pub fn run(
        self,
        stacks: tokio::sync::watch::Receiver<Arc<Stack>>,
        cancel: CancellationToken,
    ) -> RouterHandle {
        let PreparedRouter {
            engine,
            kind,
            stream,
            config,
            events,
            proxy,
            gateway,
        } = self;
        let router = Router {
            engine,
            kind,
            stream,
            template: config.stack.proxy.template.clone(),
            confd: config.stack.proxy.confd.clone(),
            confd_live: BTreeMap::new(),
            config,
            events: events.clone(),
            proxy: proxy.clone(),
            // An adopted proxy's config is unknown: the first apply reloads.
            live: None,
            kvs: BTreeMap::new(),
            revision: 0,
            skipped: BTreeSet::new(),
            gateway,
            file_behind: false,
            retry_at: None,
            retry_backoff: RETRY_FIRST,
        };
        let task = tokio::spawn(router.run(stacks, cancel));
        RouterHandle {
            events,
            task,
            proxy,
        }
    }
}

/// The config the proxy serves now, and the view it came from.
struct Live {
    text: String,
    view: View,
}

struct Router {
    engine: Engine,
    /// The proxy's kind, as the router started (a change waits for `up`).
    kind: ProxyKind,
    /// nginx's stream module, found once its container ran (None for HAProxy).
    stream: Option<StreamModule>,
    config: RouterConfig,
    /// The user's template file, read at every apply so an edit takes effect
    /// at the next registry change; `None`: the built-in one.
    template: Option<PathBuf>,
    /// The stack's confd directory (`proxy.confd`), read at every apply
    /// like the template; it renders the config instead of the template.
    confd: Option<PathBuf>,
    /// Each confd resource's last installed file, by resource file.
    confd_live: BTreeMap<PathBuf, String>,
    events: broadcast::Sender<RouterEvent>,
    proxy: ProxyContainer,
    live: Option<Live>,
    /// The registry as the watch has delivered it.
    kvs: BTreeMap<String, String>,
    revision: i64,
    /// Keys reported as skipped, so each is reported once while it stays.
    skipped: BTreeSet<String>,
    /// The stack network's gateway: the only source the control port admits.
    gateway: IpAddr,
    /// The file in the proxy container is older than `live`: a change the
    /// runtime API applied as the watch delivered it, uploaded at the next
    /// (debounced) apply.
    file_behind: bool,
    /// When to apply again after the proxy did not take a rendering for a
    /// passing reason (a reload not seen taken, the engine failing us), and
    /// how long the next such wait is.
    retry_at: Option<tokio::time::Instant>,
    retry_backoff: Duration,
}

/// The first wait before applying again after a passing failure; it doubles
/// up to [`RETRY_MAX`] while they go on.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The triggers of the main loop.
enum Trigger {
    Watch(Result<Option<WatchResponse>, rpc::Error>),
    Due,
    Retry,
    ProxyDied,
    ProxyEventsEnded,
    Stack(Box<Stack>),
    Stop,
}

impl Router {
    fn report(&self, event: RouterEvent) {
        let _ = self.events.send(event);
    }

    async fn run(
        mut self,
        mut stacks: tokio::sync::watch::Receiver<Arc<Stack>>,
        cancel: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        let proxy_name = self.proxy.name.clone();
        let mut proxy_events = Box::pin(self.engine.project_events(&self.config.project, None));
        loop {
            // One etcd session: connect, read everything, watch from there.
            let session = tokio::select! {
                s = self.connect_and_list() => s,
                _ = cancel.cancelled() => return,
            };
            let (mut client, revision) = match session {
                Ok(s) => s,
                Err(message) => {
                    self.report(RouterEvent::EtcdUnavailable {
                        message,
                        retry_in: backoff,
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            self.apply().await;
            let create = rpc::watch_of(self.prefix_key(), true, revision + 1);
            let mut watch = match client.watch(create).await {
                Ok(w) => w,
                Err(e) => {
                    self.report(RouterEvent::EtcdUnavailable {
                        message: e.to_string(),
                        retry_in: backoff,
                    });
                    continue;
                }
            };
            let mut debounce = Debounce::new(self.config.quiet, self.config.max_delay);
            loop {
                let deadline = debounce.deadline();
                let retry_at = self.retry_at;
                let trigger = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Trigger::Stop,
                    m = watch.message() => Trigger::Watch(m),
                    _ = sleep_until(deadline), if deadline.is_some() => Trigger::Due,
                    _ = sleep_until(retry_at), if retry_at.is_some() => Trigger::Retry,
                    // An error: no one publishes edits (any more).
                    Ok(()) = stacks.changed() => Trigger::Stack(Box::new(Stack::clone(&stacks.borrow_and_update()))),
                    e = proxy_events.next() => match e {
                        Some(Ok(e)) if e.name == proxy_name && matches!(e.kind, ContainerEventKind::Died { .. }) => Trigger::ProxyDied,
                        Some(_) => continue,
                        None => Trigger::ProxyEventsEnded,
                    },
                };
                match trigger {
                    Trigger::Stop => return,
                    Trigger::Watch(Ok(Some(resp))) => {
                        if resp.canceled {
                            // Compacted past our revision, or the server
                            // cancelled: read everything again.
                            break;
                        }
                        for event in &resp.events {
                            let Some(kv) = &event.kv else { continue };
                            let key = String::from_utf8_lossy(&kv.key).into_owned();
                            match event.r#type() {
                                EventType::Put => {
                                    let value = String::from_utf8_lossy(&kv.value).into_owned();
                                    self.kvs.insert(key, value);
                                }
                                EventType::Delete => {
                                    self.kvs.remove(&key);
                                }
                            }
                            self.revision = self.revision.max(kv.mod_revision);
                        }
                        if !resp.events.is_empty() {
                            // Servers coming and going reach HAProxy now;
                            // the debounced apply follows (the file, or a
                            // reload for anything else).
                            self.apply_servers_now().await;
                            debounce.hit(tokio::time::Instant::now());
                        }
                    }
                    Trigger::Watch(Ok(None)) | Trigger::Watch(Err(_)) => {
                        self.report(RouterEvent::EtcdUnavailable {
                            message: "the watch on etcd ended".into(),
                            retry_in: backoff,
                        });
                        break;
                    }
                    Trigger::Due => {
                        if debounce.take(tokio::time::Instant::now()) {
                            self.apply().await;
                        }
                    }
                    Trigger::Retry => {
                        self.retry_at = None;
                        self.apply().await;
                    }
                    Trigger::ProxyDied => self.restart_proxy(&cancel).await,
                    Trigger::Stack(stack) => {
                        let stack = *stack;
                        self.config.stack.services = stack.services;
                        self.template = stack.proxy.template;
                        self.confd = stack.proxy.confd;
                        self.apply().await;
                    }
                    Trigger::ProxyEventsEnded => {
                        // The engine connection dropped: follow again, and
                        // look at the proxy in case its death was missed.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        proxy_events =
                            Box::pin(self.engine.project_events(&self.config.project, None));
                        if !self.proxy_answers().await {
                            self.restart_proxy(&cancel).await;
                        }
                    }
                }
            }
        }
    }

    /// The registry's keys for this project (discovery settings wait for the
    /// next `up`, so an edited stack never moves them).
    fn layout(&self) -> Layout {
        Layout::new(&self.config.stack.discovery, &self.config.project)
    }

    /// What the router reads and watches: the registry's listing, or with
    /// confd resources the longest prefix common to every key they read.
    fn prefix_key(&self) -> String {
        let resources = self
            .confd
            .as_ref()
            .and_then(|dir| crate::spec::confd::read(dir, self.kind).ok());
        match resources {
            Some(resources) => {
                let keys: Vec<String> = resources.iter().flat_map(Resource::full_keys).collect();
                common_prefix(&keys)
            }
            None => self.layout().listing(),
        }
    }

    async fn connect_and_list(&mut self) -> Result<(Client, i64), String> {
        let timeouts = Timeouts::new(Duration::from_secs(2), Duration::from_secs(5));
        let mut client = Client::connect(&self.config.endpoints, timeouts)
            .await
            .map_err(|e| {
                format!(
                    "cannot reach etcd at {}: {e}",
                    self.config.endpoints.join(",")
                )
            })?;
        let resp = client
            .get(self.prefix_key(), true)
            .await
            .map_err(|e| format!("etcd at {}: {e}", self.config.endpoints.join(",")))?;
        let revision = resp.header.map(|h| h.revision).unwrap_or(0);
        self.kvs = resp
            .kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect();
        self.revision = revision;
        Ok((client, revision))
    }

    /// Applies the registry as the watch delivered it when the runtime API
    /// can (servers added, removed or moved, and the built-in or the stack's
    /// template): no debounce for what costs one master CLI exchange. The
    /// file in the container follows at the debounced [`Router::apply`],
    /// which also reports what this one leaves (render errors, skipped keys,
    /// a change that needs a reload). True when it applied something.
    async fn apply_servers_now(&mut self) -> bool {
        if self.confd.is_some() || self.kind != ProxyKind::Haproxy {
            return false;
        }
        let Some(live) = self.live.as_ref() else {
            return false;
        };
        let started = Instant::now();
        let registry = Registry::from_kvs(self.layout().prefix(), self.kvs.clone());
        let view = view_keeping(
            &self.config.stack,
            &self.config.project,
            &registry,
            Some(&live.view),
        );
        let Some(text) = self.render_quietly(&view) else {
            return false;
        };
        let Some(commands) = runtime_commands(&live.text, &text) else {
            return false;
        };
        if commands.is_empty() || self.runtime(&commands).await.is_err() {
            return false;
        }
        let instances = registry.services.values().map(Vec::len).sum();
        self.live = Some(Live { text, view });
        self.file_behind = true;
        self.report(RouterEvent::Applied {
            change: Change::Runtime { commands },
            revision: self.revision,
            instances,
            took: started.elapsed(),
        });
        true
    }

    /// The stack's template (or the built-in one) rendered over `view`
    /// with devstack's HAProxy sections (only HAProxy has a runtime API to
    /// apply it through), or `None` without a word (the apply that follows
    /// reports it).
    fn render_quietly(&self, view: &View) -> Option<String> {
        let template = match &self.template {
            None => std::borrow::Cow::Borrowed(builtin_template(self.kind)),
            Some(path) => std::borrow::Cow::Owned(std::fs::read_to_string(path).ok()?),
        };
        let text = render_for(self.kind, &template, view).ok()?;
        Some(devstack_sections(
            &text,
            self.config.etcd_for_containers.as_ref(),
            self.gateway,
        ))
    }

    /// Applies again after the current backoff (a later change may come
    /// sooner; it applies then as usual).
    fn apply_again(&mut self) {
        self.retry_at = Some(tokio::time::Instant::now() + self.retry_backoff);
        self.retry_backoff = (self.retry_backoff * 2).min(RETRY_MAX);
    }

    /// Renders the registry and brings the proxy to it.
    async fn apply(&mut self) {
        let started = Instant::now();
        let registry = Registry::from_kvs(self.layout().prefix(), self.kvs.clone());
        let skipped: BTreeSet<String> = registry.skipped.iter().map(|s| s.key.clone()).collect();
        for s in &registry.skipped {
            if !self.skipped.contains(&s.key) {
                self.report(RouterEvent::RegistrySkipped {
                    key: s.key.clone(),
                    reason: s.reason.clone(),
                });
            }
        }
        self.skipped = skipped;
        let instances = registry.services.values().map(Vec::len).sum();
        let view = view_keeping(
            &self.config.stack,
            &self.config.project,
            &registry,
            self.live.as_ref().map(|l| &l.view),
        );
        let mut installed = None;
        let text = if let Some(dir) = self.confd.clone() {
            match self.render_confd(&dir).await {
                Some((text, proxy_resource)) => {
                    installed = proxy_resource;
                    self.sections(&text)
                }
                None => return,
            }
        } else {
            match self.render_template(&view) {
                Some(text) => text,
                None => return,
            }
        };
        let change = match self.bring_proxy_to(&text).await {
            Ok(change) => change,
            Err(Refused::Check(CheckError {
                kind,
                line,
                message,
            })) => {
                let text_line = line.and_then(|l| text.lines().nth(l.wrapping_sub(1)));
                self.report(RouterEvent::CheckFailed {
                    proxy: kind,
                    line,
                    message,
                    text: text_line.map(|t| t.trim().to_string()),
                });
                return;
            }
            Err(Refused::Reload { message, restored }) => {
                // The same rendering would be refused again: the next
                // change applies.
                self.report(RouterEvent::ReloadFailed { message, restored });
                return;
            }
            Err(Refused::Trouble(message)) => {
                self.report(RouterEvent::ProxyTrouble { message });
                self.apply_again();
                return;
            }
        };
        self.retry_at = None;
        self.retry_backoff = RETRY_FIRST;
        self.live = Some(Live { text, view });
        if let Some((resource, rendered)) = installed {
            if self.confd_live.get(&resource.file) != Some(&rendered) {
                self.report(RouterEvent::ConfdInstalled {
                    resource: resource.name(),
                    dest: resource.dest.clone(),
                    reload_cmd: resource.reload_cmd.clone(),
                });
                self.confd_live.insert(resource.file.clone(), rendered);
            }
        }
        self.report(RouterEvent::Applied {
            change,
            revision: self.revision,
            instances,
            took: started.elapsed(),
        });
    }

    /// The stack's template (or the built-in one) rendered over `view`,
    /// with devstack's sections; `None` when it failed (reported).
    fn render_template(&self, view: &View) -> Option<String> {
        let template = match &self.template {
            None => builtin_template(self.kind).to_string(),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    self.report(RouterEvent::RenderFailed {
                        template: Some(path.clone()),
                        line: None,
                        message: format!("cannot read {}: {e}", path.display()),
                    });
                    return None;
                }
            },
        };
        match render_for(self.kind, &template, view) {
            Ok(t) => Some(self.sections(&t)),
            Err(RenderError { line, message }) => {
                self.report(RouterEvent::RenderFailed {
                    template: self.template.clone(),
                    line,
                    message,
                });
                None
            }
        }
    }

    /// Renders every confd resource of `dir` over the registry, as confd
    /// does: each resource's keys under its prefix, `check_cmd` run in the
    /// proxy container on the staged file. Resources other than the HAProxy
    /// configuration are installed at their `dest` in the proxy container
    /// here; the HAProxy configuration is returned (with its resource and
    /// text), for devstack's own path to apply. `None`: the HAProxy
    /// configuration did not render or pass its check (reported), and the
    /// last good config stays.
    async fn render_confd(
        &mut self,
        dir: &std::path::Path,
    ) -> Option<(String, Option<(Resource, String)>)> {
        let resources = match crate::spec::confd::read(dir, self.kind) {
            Ok(r) => r,
            Err(problems) => {
                self.report(RouterEvent::RenderFailed {
                    template: Some(dir.to_path_buf()),
                    line: None,
                    message: problems.join("; "),
                });
                return None;
            }
        };
        let mut proxy_config = None;
        let mut others_changed = false;
        for resource in resources {
            let is_proxy = resource.is_proxy_config(self.kind);
            let rendered = match self.render_resource(&resource).await {
                Some(t) => t,
                None if is_proxy => return None,
                None => continue,
            };
            let unchanged = self.confd_live.get(&resource.file) == Some(&rendered);
            if !unchanged {
                if let Some(cmd) = &resource.check_cmd {
                    if !self.check_resource(&resource, cmd, &rendered).await {
                        if is_proxy {
                            return None;
                        }
                        continue;
                    }
                }
            }
            if is_proxy {
                proxy_config = Some((rendered.clone(), (resource, rendered)));
            } else if !unchanged {
                let mode = resource.mode.unwrap_or(0o644);
                match self
                    .engine
                    .copy_into(&self.proxy.id, &resource.dest, rendered.as_bytes(), mode)
                    .await
                {
                    Ok(()) => {
                        others_changed = true;
                        self.report(RouterEvent::ConfdInstalled {
                            resource: resource.name(),
                            dest: resource.dest.clone(),
                            reload_cmd: resource.reload_cmd.clone(),
                        });
                        self.confd_live.insert(resource.file.clone(), rendered);
                    }
                    Err(e) => self.report(RouterEvent::ProxyTrouble {
                        message: format!("installing {}: {e}", resource.dest),
                    }),
                }
            }
        }
        if others_changed {
            // The proxy reads those files at a reload only.
            self.live = None;
        }
        proxy_config.map(|(text, installed)| (text, Some(installed)))
    }

    /// One resource's template over its keys; `None` when it failed (reported).
    async fn render_resource(&self, resource: &Resource) -> Option<String> {
        let text = match std::fs::read_to_string(&resource.src) {
            Ok(t) => t,
            Err(e) => {
                self.report(RouterEvent::RenderFailed {
                    template: Some(resource.src.clone()),
                    line: None,
                    message: format!("cannot read {}: {e}", resource.src.display()),
                });
                return None;
            }
        };
        let store = Store::from_registry(&self.kvs, &resource.prefix, &resource.full_keys());
        let name = resource
            .src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // lookupIP asks the resolver: off the router's task.
        let rendered = tokio::task::spawn_blocking(move || {
            gotemplate::render(&name, &text, &store, &gotmpl::Value::Nil)
        })
        .await;
        match rendered {
            Ok(Ok(t)) => Some(t),
            Ok(Err(gotemplate::RenderError { line, message })) => {
                self.report(RouterEvent::RenderFailed {
                    template: Some(resource.src.clone()),
                    line,
                    message,
                });
                None
            }
            Err(e) => {
                self.report(RouterEvent::RenderFailed {
                    template: Some(resource.src.clone()),
                    line: None,
                    message: format!("the render stopped: {e}"),
                });
                None
            }
        }
    }

    /// Stages `rendered` in the proxy container and runs the resource's
    /// check command there with `{{.src}}` as that file, as confd does.
    async fn check_resource(&self, resource: &Resource, cmd: &str, rendered: &str) -> bool {
        let base = resource.dest.rsplit('/').next().unwrap_or("resource");
        let staged = format!("/tmp/.{base}.devstack-confd");
        let mut data = BTreeMap::new();
        data.insert("src".to_string(), gotmpl::Value::from(staged.as_str()));
        let command = match gotemplate::render(
            "check_cmd",
            cmd,
            &Store::default(),
            &gotmpl::Value::from(data),
        ) {
            Ok(c) => c,
            Err(e) => {
                self.report(RouterEvent::ConfdCheckFailed {
                    resource: resource.name(),
                    command: cmd.to_string(),
                    output: format!("the check_cmd does not render: {e}"),
                });
                return false;
            }
        };
        let mode = resource.mode.unwrap_or(0o644);
        if let Err(e) = self
            .engine
            .copy_into(&self.proxy.id, &staged, rendered.as_bytes(), mode)
            .await
        {
            self.report(RouterEvent::ProxyTrouble {
                message: format!("staging {staged}: {e}"),
            });
            return false;
        }
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), command.clone()];
        match self
            .engine
            .exec_capture(&self.proxy.id, &argv, Duration::from_secs(30))
            .await
        {
            Ok(out) if out.exit_code == Some(0) => true,
            Ok(out) => {
                self.report(RouterEvent::ConfdCheckFailed {
                    resource: resource.name(),
                    command,
                    output: match out.exit_code {
                        Some(code) => format!("exit code {code}: {}", out.output.trim()),
                        None => format!("did not finish within 30s: {}", out.output.trim()),
                    },
                });
                false
            }
            Err(e) => {
                self.report(RouterEvent::ProxyTrouble {
                    message: format!("running the check_cmd of {}: {e}", resource.name()),
                });
                false
            }
        }
    }

    /// devstack's own sections after a rendering, as the proxy kind takes them.
    fn sections(&self, text: &str) -> String {
        match &self.stream {
            Some(module) => nginx::with_devstack_sections(
                text,
                self.config.etcd_for_containers.as_ref(),
                self.gateway,
                module,
            ),
            None => devstack_sections(text, self.config.etcd_for_containers.as_ref(), self.gateway),
        }
    }

    /// Whether the proxy answers on its control port now.
    async fn proxy_answers(&self) -> bool {
        match self.kind {
            ProxyKind::Haproxy => master_cli(self.proxy.cli, "show proc").await.is_ok(),
            ProxyKind::Nginx => read_control(self.proxy.cli).await.is_ok(),
        }
    }

    async fn bring_proxy_to(&mut self, text: &str) -> Result<Change, Refused> {
        let live = self.live.as_ref().map(|l| l.text.as_str());
        if live == Some(text) {
            if self.file_behind {
                // Applied already through the runtime API: the file follows.
                self.engine
                    .upload_file(&self.proxy.id, proxy::CONFIG_PATH, text)
                    .await
                    .map_err(|e| Refused::Trouble(e.to_string()))?;
                self.file_behind = false;
            }
            return Ok(Change::Unchanged);
        }
        if self.kind == ProxyKind::Nginx {
            // No runtime API: every change is a checked reload.
            return match nginx_path::install(&self.engine, &self.proxy, live, text).await {
                Ok(()) => Ok(Change::Reload),
                Err(Failure::Check(e)) => Err(Refused::Check(e)),
                Err(Failure::Reload { message, restored }) => {
                    Err(Refused::Reload { message, restored })
                }
                Err(Failure::Trouble(message) | Failure::Unconfirmed(message)) => {
                    Err(Refused::Trouble(message))
                }
            };
        }
        if let Some(commands) = live.and_then(|l| runtime_commands(l, text)) {
            match self.runtime(&commands).await {
                Ok(()) => {
                    // The file follows, so a restart or a later reload of
                    // the proxy starts from what it serves now.
                    self.engine
                        .upload_file(&self.proxy.id, proxy::CONFIG_PATH, text)
                        .await
                        .map_err(|e| Refused::Trouble(e.to_string()))?;
                    self.file_behind = false;
                    return Ok(Change::Runtime { commands });
                }
                Err(message) => self.report(RouterEvent::ProxyTrouble {
                    message: format!("runtime API: {message}; reloading instead"),
                }),
            }
        }
        match self.engine.proxy_check(&self.proxy.id, text).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Refused::Check(e)),
            Err(e) => return Err(Refused::Trouble(e.to_string())),
        }
        self.engine
            .upload_file(&self.proxy.id, proxy::CONFIG_PATH, text)
            .await
            .map_err(|e| Refused::Trouble(e.to_string()))?;
        self.file_behind = false;
        if let Err(message) = reload(self.proxy.cli).await {
            // The master keeps the workers it had: the file goes back to
            // what they serve, so a restart starts from a good config.
            let restored = match live {
                Some(good) => self
                    .engine
                    .upload_file(&self.proxy.id, proxy::CONFIG_PATH, good)
                    .await
                    .is_ok(),
                None => false,
            };
            return Err(Refused::Reload { message, restored });
        }
        Ok(Change::Reload)
    }

    /// Sends `set server` commands to the current worker, a few per connection.
    async fn runtime(&self, commands: &[String]) -> Result<(), String> {
        for chunk in commands.chunks(16) {
            let line = chunk
                .iter()
                .map(|c| format!("@1 {c}"))
                .collect::<Vec<_>>()
                .join("; ");
            let answer = master_cli(self.proxy.cli, &line)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(failure) = runtime_failure(&answer) {
                return Err(failure);
            }
        }
        Ok(())
    }

    /// The proxy container died: start it again with the live config (the
    /// file in the container is always the live config) and wait until it answers.
    async fn restart_proxy(&mut self, cancel: &CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let config = self
                .live
                .as_ref()
                .map(|l| l.text.clone())
                .unwrap_or_else(|| {
                    self.sections(
                        &render_for(
                            self.kind,
                            builtin_template(self.kind),
                            &super::view(
                                &self.config.stack,
                                &self.config.project,
                                &Registry::default(),
                            ),
                        )
                        .unwrap_or_default(),
                    )
                });
            let outcome = match self.engine.ensure_proxy(&self.config.proxy, &config).await {
                Ok(mut p) => {
                    let project = &self.config.project;
                    let waited = match decide_reach(&self.engine, project, &mut p).await {
                        Err(e) => Err(e),
                        Ok(()) => match self.kind {
                            ProxyKind::Haproxy => wait_for_proxy(&self.engine, project, &p).await,
                            ProxyKind::Nginx => wait_until(&self.engine, project, &p, || async {
                                read_control(p.cli).await.map_err(|e| e.to_string())
                            })
                            .await
                            .map(|_| ()),
                        },
                    };
                    waited.map(|()| p).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(p) => {
                    let recreated = p.id != self.proxy.id;
                    self.proxy = p;
                    if recreated {
                        // A new container got the base config: render again.
                        self.live = None;
                        self.apply().await;
                    }
                    self.report(RouterEvent::ProxyStarted {
                        container: self.proxy.name.clone(),
                        restarted: true,
                    });
                    return;
                }
                Err(message) => {
                    self.report(RouterEvent::ProxyTrouble {
                        message: format!("restarting the proxy: {message}"),
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// The longest prefix every key shares (etcd watches one prefix).
fn common_prefix(keys: &[String]) -> String {
    let Some(first) = keys.first() else {
        return "/".into();
    };
    let mut len = first.len();
    for k in &keys[1..] {
        len = len.min(
            first
                .bytes()
                .zip(k.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    first[..len].to_string()
}

/// Why an apply did not take effect.
enum Refused {
    Check(CheckError),
    Reload { message: String, restored: bool },
    Trouble(String),
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// devstack's own sections after the template's: the control port
/// ([`proxy::control_section`]) and, with an embedded etcd, its forward.
pub fn devstack_sections(config: &str, etcd: Option<&EtcdTarget>, gateway: IpAddr) -> String {
    format!(
        "{}{}",
        with_etcd_forward(config, etcd),
        proxy::control_section(gateway)
    )
}

/// devstack's own section after the template's: containers reach etcd as
/// `etcd:2379` through the proxy (which carries the `etcd` alias), whatever
/// the template says.
pub fn with_etcd_forward(config: &str, etcd: Option<&EtcdTarget>) -> String {
    match etcd {
        None => config.to_string(),
        Some(addr) => format!(
            "{config}\n# Added by devstack: containers reach etcd as etcd:2379 through here.\nfrontend devstack_etcd\n    mode tcp\n    bind :2379\n    timeout client 1h\n    default_backend devstack_etcd\n\nbackend devstack_etcd\n    mode tcp\n    timeout server 1h\n    server etcd {addr}\n"
        ),
    }
}

async fn show_proc(cli: SocketAddr) -> Result<ProcState, String> {
    let answer = master_cli(cli, "show proc")
        .await
        .map_err(|e| e.to_string())?;
    parse_show_proc(&answer).ok_or_else(|| format!("unexpected `show proc` answer: {answer}"))
}

/// Waits until the proxy's master CLI shows a worker. A proxy container
/// that exits meanwhile ends the wait at once with HAProxy's own last
/// words, instead of a timeout that hides them.
async fn wait_for_proxy(
    engine: &Engine,
    project: &str,
    proxy: &ProxyContainer,
) -> Result<(), RouterError> {
    wait_until(engine, project, proxy, || async {
        match show_proc(proxy.cli).await {
            Ok(p) if p.worker.is_some() => Ok(()),
            Ok(_) => Err("no worker started".to_string()),
            Err(e) => Err(e),
        }
    })
    .await
}

/// Decides the stack's reach on its proxy, unless it is decided already:
/// the proxy's address and its loopback-published control port are both
/// tried ([`probe_reach`]) until one answers, and that is settled for every
/// user of `engine` (`proxy.cli` follows it). Neither by the wait's
/// deadline: the decision is `Exec`, and the control channel goes through
/// a tunnel of `docker exec` relays ([`crate::engine::tunnel`]), which must
/// answer in turn. A proxy that exits meanwhile ends the wait with its last
/// words.
async fn decide_reach(
    engine: &Engine,
    project: &str,
    proxy: &mut ProxyContainer,
) -> Result<(), RouterError> {
    let (paths, kind) = (proxy.paths, proxy.kind);
    let reach = if engine.reach_decided() {
        engine.reach()
    } else {
        let probed = wait_until(engine, project, proxy, || async {
            probe_reach(&paths, kind)
                .await
                .ok_or_else(|| "not answering yet".to_string())
        })
        .await;
        match probed {
            Ok(found) => found,
            Err(RouterError::ProxyUnreachable { .. }) => Reach::Exec,
            Err(e) => return Err(e),
        }
    };
    engine.settle_reach(reach);
    if reach != Reach::Exec {
        if let Some(cli) = paths.for_reach(reach) {
            proxy.cli = cli;
        }
        return Ok(());
    }
    let tunnel = engine
        .control_tunnel(&proxy.id)
        .await
        .map_err(|source| RouterError::Proxy {
            project: project.to_string(),
            source,
        })?;
    proxy.cli = tunnel;
    let through = wait_until(engine, project, proxy, || async {
        if answers(kind, tunnel).await {
            Ok(())
        } else {
            Err("not answering yet".to_string())
        }
    })
    .await;
    match through {
        Err(RouterError::ProxyUnreachable { .. }) => Err(RouterError::ProxyUnreachable {
            project: project.to_string(),
            addr: tunnel,
            message: format!(
                "neither the proxy's address ({}) nor its control port on 127.0.0.1 ({}) answered, so devstack reaches this stack's containers only through `docker exec`, and the control port did not answer through it either (a relay by python3 or bash in `{}`)",
                paths.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "none".into()),
                paths.published.map(|a| a.to_string()).unwrap_or_else(|| "not published".into()),
                proxy.name,
            ),
        }),
        other => other,
    }
}

/// Starts nginx: first on the built-in rendering of an empty registry
/// alone (whether its stream module must be loaded is only known once it
/// runs), then, unless an adopted container already answers its control
/// port, on that rendering with devstack's sections, checked and reloaded.
async fn start_nginx(
    engine: &Engine,
    config: &RouterConfig,
    base: &str,
    gateway: IpAddr,
) -> Result<(ProxyContainer, StreamModule), RouterError> {
    let project = &config.project;
    let mut proxy = engine
        .ensure_proxy(&config.proxy, base)
        .await
        .map_err(|source| RouterError::Proxy {
            project: project.clone(),
            source,
        })?;
    // The control port exists only once devstack's sections are in, so the
    // reach is decided after that; until then the loopback publication,
    // which answers wherever any path does, is the one asked.
    if !engine.reach_decided() {
        if engine.reach() == Reach::Exec {
            // A remote engine: its loopback is not this host's.
            proxy.cli =
                engine
                    .control_tunnel(&proxy.id)
                    .await
                    .map_err(|source| RouterError::Proxy {
                        project: project.clone(),
                        source,
                    })?;
        } else if let Some(published) = proxy.paths.published {
            proxy.cli = published;
        }
    }
    let version = wait_until(engine, project, &proxy, || async {
        let argv = vec!["nginx".to_string(), "-V".to_string()];
        match engine
            .exec_capture(&proxy.id, &argv, Duration::from_secs(5))
            .await
        {
            Ok(out) if out.exit_code == Some(0) => Ok(out.output),
            Ok(out) => Err(format!("`nginx -V` failed: {}", out.output.trim())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    let stream = nginx::stream_module(&version).ok_or_else(|| RouterError::Render {
        project: project.clone(),
        message: format!(
            "the nginx of `{}` has no stream module (`nginx -V` shows no `--with-stream`), which devstack's control port and etcd forward need",
            config.proxy.image
        ),
    })?;
    if read_control(proxy.cli).await.is_err() {
        let full = nginx::with_devstack_sections(
            base,
            config.etcd_for_containers.as_ref(),
            gateway,
            &stream,
        );
        if let Err(failure) = nginx_path::install(engine, &proxy, None, &full).await {
            return Err(RouterError::ProxyUnreachable {
                project: project.clone(),
                addr: proxy.cli,
                message: match failure {
                    Failure::Check(e) => e.to_string(),
                    Failure::Reload { message, .. }
                    | Failure::Trouble(message)
                    | Failure::Unconfirmed(message) => message,
                },
            });
        }
    }
    Ok((proxy, stream))
}

/// Polls `probe` until it answers. A proxy container that exits meanwhile
/// ends the wait at once with the proxy's own last words, instead of a
/// timeout that hides them.
async fn wait_until<T, F, Fut>(
    engine: &Engine,
    project: &str,
    proxy: &ProxyContainer,
    mut probe: F,
) -> Result<T, RouterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    let network = crate::plan::names::network_name(project);
    let mut next_look = Instant::now() + Duration::from_millis(200);
    loop {
        let error = match probe().await {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        if Instant::now() >= next_look || Instant::now() >= deadline {
            next_look = Instant::now() + Duration::from_millis(200);
            if let Ok(status) = engine.inspect(&proxy.id, &network).await {
                if matches!(status.state, ObservedState::Exited | ObservedState::Dead) {
                    return Err(RouterError::ProxyExited {
                        project: project.to_string(),
                        container: proxy.name.clone(),
                        status: match status.exit_code {
                            Some(code) => format!("exit code {code}"),
                            None => "no exit code".into(),
                        },
                        logs: engine.last_lines(&proxy.id, 20).await,
                    });
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(RouterError::ProxyUnreachable {
                project: project.to_string(),
                addr: proxy.cli,
                message: error,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reloads through the master CLI and waits until the master has re-read
/// the config and forked the new worker. The listeners stay open in the
/// master throughout, so connections arriving meanwhile wait in the
/// kernel's queue rather than being refused.
pub async fn reload(cli: SocketAddr) -> Result<(), String> {
    let before = show_proc(cli).await?;
    // The master re-executes itself: the answer may be cut short.
    let _ = master_cli(cli, "reload").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Ok(now) = show_proc(cli).await {
            if now.failed_reloads > before.failed_reloads {
                return Err("HAProxy failed to reload (see the proxy's logs)".into());
            }
            if now.reloads > before.reloads && now.worker.is_some() && now.worker != before.worker {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err("HAProxy did not finish reloading within 10s".into());
        }
    }
}
