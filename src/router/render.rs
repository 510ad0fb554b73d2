//! The proxy configuration, rendered from the stack's routes and a registry
//! snapshot with a template: devstack's built-in one, or the stack's own.
//!
//! Every backend has a fixed number of server slots. Registered instances fill
//! the first ones and the rest are `disabled`, so that an instance coming or
//! going changes only a slot, which the runtime API can apply without a reload.
//!
//! Every value that reaches the configuration is one token of it: registry
//! values are checked when the registry is read ([`super::registry`]), and
//! the stack's own values (route hosts and paths, health check paths, names)
//! are checked here before rendering; one that would be more than one word,
//! a comment or a new line makes the render fail, naming it.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use super::layout::Layout;
use super::registry::{Instance, Registry};
use crate::engine::runtime::is_token;
use crate::spec::{Probe, ProxyKind, Stack};

/// The built-in template (HAProxy's).
pub const BUILTIN_TEMPLATE: &str = include_str!("haproxy.cfg.j2");
/// The built-in template for `proxy.kind: nginx`.
pub const NGINX_TEMPLATE: &str = include_str!("nginx.conf.j2");

/// The built-in template of a proxy kind.
pub fn builtin_template(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Haproxy => BUILTIN_TEMPLATE,
        ProxyKind::Nginx => NGINX_TEMPLATE,
    }
}

/// A template that could not be rendered, with where it went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct RenderError {
    /// 1-based line in the template, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// One route in frontend order (most specific first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteView {
    pub id: usize,
    pub service: String,
    pub backend: String,
    pub host: Option<String>,
    /// The path prefix without a trailing `/`; None for the whole host.
    pub path: Option<String>,
    /// `path` with the regular expression's special characters escaped, for
    /// `replace-path` (a `.` in a path is a dot, not any character).
    pub path_regex: Option<String>,
    pub strip_prefix: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckView {
    /// `http` or `tcp`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub path: Option<String>,
    /// A check port when it differs from the traffic port.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotView {
    /// The server name in HAProxy, `s1`, `s2`, ...
    pub name: String,
    pub address: String,
    pub port: u16,
    pub enabled: bool,
    /// The instance in this slot, for templates that want its details.
    pub instance: Option<Instance>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub backend: String,
    pub check: CheckView,
    pub strip_routes: Vec<RouteView>,
    pub instances: Vec<Instance>,
    pub slots: Vec<SlotView>,
}

/// The routes one virtual host answers, for proxies that route by host
/// first and path second (nginx's `server` blocks): the same choices as the
/// frontend order of `routes`, grouped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostView {
    /// The host name; None for the default server (no route's host matched).
    pub name: Option<String>,
    /// Routes by path this host answers, longer paths first: its own
    /// host-and-path routes, then (when it has no host-only route) the
    /// path-only routes whose path it does not route itself.
    pub paths: Vec<RouteView>,
    /// What every other path goes to: the host-only route, else the route
    /// with neither host nor path; None: no route matches (404).
    pub fallback: Option<RouteView>,
}

/// Everything a template sees.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    pub project: String,
    pub prefix: String,
    pub routes: Vec<RouteView>,
    /// The default server first, then one per route host.
    pub hosts: Vec<HostView>,
    pub services: Vec<ServiceView>,
    pub kvs: BTreeMap<String, String>,
}

/// The backend name of a service.
pub fn backend_name(service: &str) -> String {
    format!("svc_{service}")
}

/// How many server slots a backend gets: room for every replica twice (a
/// blue-green swap runs old and new side by side), never fewer than 4.
pub fn slot_count(replicas: u32, registered: usize) -> usize {
    let wanted = (replicas as usize * 2).max(4).max(registered);
    wanted.next_power_of_two()
}

/// Builds the template's view of a stack and a registry snapshot.
pub fn view(stack: &Stack, project: &str, registry: &Registry) -> View {
    view_keeping(stack, project, registry, None)
}

/// Like [`view`], but an instance that had a slot in `previous` keeps it, so
/// an instance coming or going changes only its own slot (one runtime API
/// command) rather than shifting every instance after it.
pub fn view_keeping(
    stack: &Stack,
    project: &str,
    registry: &Registry,
    previous: Option<&View>,
) -> View {
    let mut routes = Vec::new();
    for (name, service) in &stack.services {
        for route in &service.routes {
            routes.push(RouteView {
                id: 0,
                service: name.clone(),
                backend: backend_name(name),
                host: route.host.clone(),
                path: route
                    .path
                    .as_deref()
                    .map(|p| p.trim_end_matches('/').to_string())
                    .filter(|p| !p.is_empty()),
                path_regex: None,
                strip_prefix: route.strip_prefix,
            });
        }
        // Services call each other by production name through the proxy.
        routes.push(RouteView {
            id: 0,
            service: name.clone(),
            backend: backend_name(name),
            host: Some(format!("{name}.internal")),
            path: None,
            path_regex: None,
            strip_prefix: false,
        });
    }
    // First match wins in HAProxy: host and path, then host alone, then path
    // alone, longer paths before shorter ones.
    routes.sort_by_key(|r| {
        (
            match (&r.host, &r.path) {
                (Some(_), Some(_)) => 0,
                (Some(_), None) => 1,
                _ => 2,
            },
            std::cmp::Reverse(r.path.as_ref().map(|p| p.len()).unwrap_or(0)),
            r.host.clone(),
            r.service.clone(),
        )
    });
    for (i, route) in routes.iter_mut().enumerate() {
        route.id = i + 1;
        route.path_regex = route.path.as_deref().map(regex_escape);
    }

    let services = stack
        .services
        .iter()
        .map(|(name, service)| {
            let traffic_port = service
                .routes
                .first()
                .map(|r| r.port)
                .or(service.container.port);
            let check = match service.container.health.as_ref().map(|h| &h.probe) {
                Some(Probe::Http { port, path }) => CheckView {
                    kind: "http",
                    path: Some(path.clone()),
                    port: (Some(*port) != traffic_port).then_some(*port),
                },
                _ => CheckView {
                    kind: "tcp",
                    path: None,
                    port: None,
                },
            };
            let instances = registry.instances(name).to_vec();
            let count = slot_count(service.container.replicas, instances.len());
            let before: Vec<Option<&str>> = previous
                .and_then(|p| p.services.iter().find(|s| s.name == *name))
                .map(|s| {
                    s.slots
                        .iter()
                        .map(|slot| slot.instance.as_ref().map(|i| i.id.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            let placed = assign_slots(&before, &instances, count);
            let slots = (0..count)
                .map(|i| match placed[i] {
                    Some(instance) => SlotView {
                        name: format!("s{}", i + 1),
                        address: instance.address.clone(),
                        port: instance.port,
                        enabled: true,
                        instance: Some(instance.clone()),
                    },
                    // An empty slot must still parse: a placeholder address, disabled.
                    None => SlotView {
                        name: format!("s{}", i + 1),
                        address: "127.0.0.1".into(),
                        port: traffic_port.unwrap_or(80),
                        enabled: false,
                        instance: None,
                    },
                })
                .collect();
            ServiceView {
                name: name.clone(),
                backend: backend_name(name),
                check,
                strip_routes: routes
                    .iter()
                    .filter(|r| r.service == *name && r.strip_prefix && r.path.is_some())
                    .cloned()
                    .collect(),
                instances,
                slots,
            }
        })
        .collect();
    View {
        project: project.to_string(),
        prefix: Layout::new(&stack.discovery, project).prefix().to_string(),
        hosts: hosts(&routes),
        routes,
        services,
        kvs: registry.kvs.clone(),
    }
}

/// Groups routes (in frontend order) by host: the default server, then each
/// host in the order its first route comes.
fn hosts(routes: &[RouteView]) -> Vec<HostView> {
    let path_only: Vec<&RouteView> = routes
        .iter()
        .filter(|r| r.host.is_none() && r.path.is_some())
        .collect();
    let root = routes
        .iter()
        .find(|r| r.host.is_none() && r.path.is_none())
        .cloned();
    let mut out = vec![HostView {
        name: None,
        paths: path_only.iter().map(|r| (*r).clone()).collect(),
        fallback: root.clone(),
    }];
    let mut names: Vec<&str> = Vec::new();
    for r in routes {
        if let Some(h) = r.host.as_deref() {
            if !names.contains(&h) {
                names.push(h);
            }
        }
    }
    for name in names {
        let own = || routes.iter().filter(|r| r.host.as_deref() == Some(name));
        let mut paths: Vec<RouteView> = own().filter(|r| r.path.is_some()).cloned().collect();
        let host_route = own().find(|r| r.path.is_none()).cloned();
        if host_route.is_none() {
            for r in &path_only {
                if !paths.iter().any(|p| p.path == r.path) {
                    paths.push((*r).clone());
                }
            }
        }
        paths.sort_by_key(|r| std::cmp::Reverse(r.path.as_ref().map(|p| p.len()).unwrap_or(0)));
        out.push(HostView {
            name: Some(name.to_string()),
            paths,
            fallback: host_route.or_else(|| root.clone()),
        });
    }
    out
}

/// Places instances in `count` slots: each keeps the slot it had in
/// `before` (by instance id) when that slot still exists; the others fill the
/// free slots from the first.
pub fn assign_slots<'a>(
    before: &[Option<&str>],
    instances: &'a [Instance],
    count: usize,
) -> Vec<Option<&'a Instance>> {
    let mut placed: Vec<Option<&Instance>> = vec![None; count];
    let mut rest = Vec::new();
    for instance in instances {
        match before
            .iter()
            .position(|id| *id == Some(instance.id.as_str()))
        {
            Some(i) if i < count && placed[i].is_none() => placed[i] = Some(instance),
            _ => rest.push(instance),
        }
    }
    let mut free = (0..count)
        .filter(|i| placed[*i].is_none())
        .collect::<Vec<_>>()
        .into_iter();
    for instance in rest {
        if let Some(i) = free.next() {
            placed[i] = Some(instance);
        }
    }
    placed
}

/// `text` as a regular expression matching exactly it.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if ".+*?()|[]{}^$\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether a URL path can be one word of HAProxy's configuration: the
/// characters RFC 3986 allows in a path (and `?` for a check's query), less
/// `'` and `$`, which HAProxy's parser would read as a quote or a variable.
fn is_config_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~%!&()*+,;=:@/?".contains(c))
}

/// A DNS host name as a route matches it (`*` for wildcards).
fn is_config_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.*_".contains(c))
}

/// Refuses a view in which a stack value would not be one token of the
/// configuration. Registry values were checked when the registry was read.
pub fn check_view(view: &View) -> Result<(), RenderError> {
    check_view_for(ProxyKind::Haproxy, view)
}

/// [`check_view`] for a proxy of `kind`: nginx also ends a directive at
/// `;`, so a path holding one is refused there.
pub fn check_view_for(kind: ProxyKind, view: &View) -> Result<(), RenderError> {
    let product = kind.product();
    let refuse = |what: String, value: &str, rule: &str| {
        Err(RenderError {
            line: None,
            message: format!(
                "{what} {value:?} cannot be written into the {product} configuration: {rule}"
            ),
        })
    };
    let is_config_path =
        |path: &str| is_config_path(path) && !(kind == ProxyKind::Nginx && path.contains(';'));
    let path_rule = match kind {
        ProxyKind::Haproxy => "a path holds only the characters URLs allow unencoded, less `'`, `$`, `#` and spaces (percent-encode the others)",
        ProxyKind::Nginx => "a path holds only the characters URLs allow unencoded, less `'`, `$`, `#`, `;` and spaces (percent-encode the others)",
    };
    if !is_token(&view.project) {
        return refuse(
            "the project name".into(),
            &view.project,
            "it must be one plain word",
        );
    }
    if view.prefix.chars().any(char::is_control) {
        return refuse(
            "the discovery prefix".into(),
            &view.prefix,
            "it holds a control character",
        );
    }
    for route in &view.routes {
        if let Some(host) = &route.host {
            if !is_config_host(host) {
                return refuse(
                    format!("the route host of service `{}`", route.service),
                    host,
                    "a host name holds only letters, digits, `-`, `.` and `*`",
                );
            }
        }
        if let Some(path) = &route.path {
            if !is_config_path(path) {
                return refuse(
                    format!("the route path of service `{}`", route.service),
                    path,
                    path_rule,
                );
            }
        }
    }
    for service in &view.services {
        if !is_token(&service.name) || !is_token(&service.backend) {
            return refuse(
                "the service name".into(),
                &service.name,
                "it must be one plain word",
            );
        }
        if let Some(path) = &service.check.path {
            if !is_config_path(path) {
                return refuse(
                    format!("the health check path of service `{}`", service.name),
                    path,
                    path_rule,
                );
            }
        }
    }
    Ok(())
}

/// Renders a template against a view, after [`check_view`].
pub fn render(template: &str, view: &View) -> Result<String, RenderError> {
    render_for(ProxyKind::Haproxy, template, view)
}

/// Renders a template for a proxy of `kind` against a view, after
/// [`check_view_for`] that kind.
pub fn render_for(kind: ProxyKind, template: &str, view: &View) -> Result<String, RenderError> {
    check_view_for(kind, view)?;
    let mut env = Environment::new();
    // A misspelt variable is an error, not an empty string in the config.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .map_err(|err| RenderError {
            line: None,
            message: err.to_string(),
        })?;
    env.set_syntax(syntax);
    let kvs = view.kvs.clone();
    // confd's key functions, so a production template reads dev keys unchanged.
    let getvs_kvs = kvs.clone();
    env.add_function("getvs", move |pattern: String| -> Vec<String> {
        getvs_kvs
            .iter()
            .filter(|(k, _)| glob_match(&pattern, k))
            .map(|(_, v)| v.clone())
            .collect()
    });
    let gets_kvs = kvs.clone();
    env.add_function(
        "gets",
        move |pattern: String| -> Vec<BTreeMap<String, String>> {
            gets_kvs
                .iter()
                .filter(|(k, _)| glob_match(&pattern, k))
                .map(|(k, v)| {
                    BTreeMap::from([
                        ("key".to_string(), k.clone()),
                        ("value".to_string(), v.clone()),
                    ])
                })
                .collect()
        },
    );
    env.add_function(
        "getv",
        move |key: String| -> Result<String, minijinja::Error> {
            kvs.get(&key).cloned().ok_or_else(|| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("key {key} is not in the registry"),
                )
            })
        },
    );
    let to_error = |err: minijinja::Error| RenderError {
        line: err.line(),
        message: match err.detail() {
            Some(detail) => format!("{}: {detail}", err.kind()),
            None => err.to_string(),
        },
    };
    env.add_template("haproxy.cfg", template)
        .map_err(to_error)?;
    let tmpl = env.get_template("haproxy.cfg").map_err(to_error)?;
    tmpl.render(minijinja::Value::from(minijinja::value::Serde(view)))
        .map_err(to_error)
}

/// `*` matches within one key segment; `**` is not needed by confd templates.
fn glob_match(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let k: Vec<&str> = key.split('/').collect();
    p.len() == k.len() && p.iter().zip(&k).all(|(p, k)| segment_match(p, k))
}

fn segment_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (head.len()..=text.len()).any(|i| {
                    text.is_char_boundary(i) && segment_match(tail, &text[i..]) && i >= head.len()
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{load, LoadOptions};

    fn stack(yaml: &str) -> Stack {
        load(&LoadOptions::inline("t.yaml", yaml)).unwrap_or_else(|r| panic!("{}", r.render(false)))
    }

    fn instance(service: &str, id: &str, replica: u32, address: &str) -> (String, String) {
        (
            format!("/services/{service}/{id}"),
            serde_json::json!({"service": service, "id": id, "replica": replica, "address": address, "port": 8080}).to_string(),
        )
    }

    #[test]
    fn globs() {
        assert!(glob_match("/services/api/*", "/services/api/c1"));
        assert!(glob_match("/services/*/*", "/services/api/c1"));
        assert!(!glob_match("/services/api/*", "/services/web/c1"));
        assert!(glob_match("/s/a*b", "/s/axxb"));
        assert!(!glob_match("/s/a*b", "/s/axxc"));
    }

    #[test]
    fn routes_order_most_specific_first() {
        let s = stack(
            "name: t\nservices:\n  a: {image: a, port: 80, routes: [/, x.localhost/api/v1, x.localhost, /api, x.localhost/api]}\n  b: {image: b, port: 80, routes: [y.localhost]}\n",
        );
        let v = view(&s, "t", &Registry::default());
        let order: Vec<String> = v
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{}{}",
                    r.host.clone().unwrap_or_default(),
                    r.path.clone().unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                "x.localhost/api/v1",
                "x.localhost/api",
                "a.internal",
                "b.internal",
                "x.localhost",
                "y.localhost",
                "/api",
                ""
            ]
        );
    }

    #[test]
    fn instances_keep_their_slots() {
        let inst = |id: &str| Instance {
            service: "a".into(),
            id: id.into(),
            replica: 0,
            address: format!("10.0.0.{}", id.len()),
            port: 80,
            image: String::new(),
            version: String::new(),
        };
        let ids = |placed: Vec<Option<&Instance>>| -> Vec<Option<String>> {
            placed
                .into_iter()
                .map(|i| i.map(|i| i.id.clone()))
                .collect()
        };
        // c1 went away: c2 stays in slot 2, the newcomer c3 takes slot 1.
        let now = [inst("c2"), inst("c3")];
        assert_eq!(
            ids(assign_slots(&[Some("c1"), Some("c2"), None, None], &now, 4)),
            [Some("c3".to_string()), Some("c2".to_string()), None, None]
        );
        // Nothing before: in order from the first slot.
        assert_eq!(
            ids(assign_slots(&[], &now, 4)),
            [Some("c2".to_string()), Some("c3".to_string()), None, None]
        );
    }

    #[test]
    fn slots_leave_room_for_a_swap() {
        assert_eq!(slot_count(1, 0), 4);
        assert_eq!(slot_count(3, 2), 8);
        assert_eq!(slot_count(1, 9), 16);
    }

    #[test]
    fn builtin_template_renders_instances_and_empty_slots() {
        let s = stack(
            "name: t\nservices:\n  api:\n    image: a\n    port: 8080\n    replicas: 2\n    health: {http: /health}\n    routes: [{host: api.t.localhost, path: /v1, strip_prefix: true}]\n",
        );
        let registry = Registry::from_kvs(
            "/services",
            vec![
                instance("api", "c1", 1, "172.18.0.2"),
                instance("api", "c2", 2, "172.18.0.3"),
            ],
        );
        let text = render(BUILTIN_TEMPLATE, &view(&s, "t", &registry)).unwrap();
        assert!(
            text.contains("server s1 172.18.0.2:8080 check inter 1s fall 2 rise 1\n"),
            "{text}"
        );
        assert!(text.contains("server s2 172.18.0.3:8080 check inter 1s fall 2 rise 1\n"));
        assert!(text.contains("server s3 127.0.0.1:8080 check inter 1s fall 2 rise 1 disabled\n"));
        assert!(text.contains("option httpchk GET /health"));
        assert!(text.contains("acl route1_host var(txn.host) -m str api.t.localhost"));
        assert!(text
            .contains(r"http-request replace-path ^/v1/?(.*)$ /\1 if { var(txn.route) -m str 1 }"));
        assert!(text.contains("no instance of api is up"));
    }

    #[test]
    fn hostile_registry_values_never_reach_the_config() {
        let s =
            stack("name: t\nservices:\n  api: {image: a, port: 8080, routes: [api.localhost]}\n");
        let mut kvs = vec![instance("api", "good", 1, "172.18.0.2")];
        for (id, address) in [
            (
                "nl",
                "172.18.0.3\n\nprogram pwn\n    command /bin/sh -c id\n",
            ),
            ("semi", "172.18.0.4;@master reload"),
            ("space", "172.18.0.5 backup"),
            ("hash", "172.18.0.6#"),
            ("quote", "172.18.0.7\""),
        ] {
            kvs.push(instance("api", id, 2, address));
        }
        kvs.push((
            "/services/api/raw".to_string(),
            "10.0.0.9:80\nprogram pwn2".to_string(),
        ));
        let registry = Registry::from_kvs("/services", kvs);
        assert_eq!(registry.skipped.len(), 6, "{:?}", registry.skipped);
        let text = render(BUILTIN_TEMPLATE, &view(&s, "t", &registry)).unwrap();
        assert!(text.contains("server s1 172.18.0.2:8080 check"), "{text}");
        for injected in [
            "program",
            "pwn",
            "@master",
            "backup",
            "172.18.0.6",
            "172.18.0.7",
        ] {
            assert!(!text.contains(injected), "{injected} in:\n{text}");
        }
        // A user template reading raw keys never sees the line-breaking one.
        let text = render(
            "{% for v in getvs('/services/api/*') %}{{ v }}\n{% endfor %}",
            &view(&s, "t", &registry),
        )
        .unwrap();
        assert!(!text.contains("pwn2"), "{text}");
    }

    #[test]
    fn stack_values_that_are_not_one_token_are_refused() {
        let refused = |services: &str, needle: &str| {
            let s = stack(&format!("name: t\nservices:\n{services}"));
            let err =
                render(BUILTIN_TEMPLATE, &view(&s, "t", &Registry::default())).expect_err(services);
            assert!(err.message.contains(needle), "{err}");
        };
        // The spec lets these through (no space in a route path; a health
        // path starting with `/`); the render refuses them.
        refused(
            "  a: {image: a, port: 80, routes: ['/x#y']}\n",
            "route path",
        );
        refused(
            "  a: {image: a, port: 80, routes: ['/x\"y']}\n",
            "route path",
        );
        refused(
            "  a: {image: a, port: 80, routes: [\"/x'y\"]}\n",
            "route path",
        );
        refused(
            "  a: {image: a, port: 80, routes: ['/x{y}']}\n",
            "route path",
        );
        refused(
            "  a: {image: a, port: 80, routes: ['/a$$y']}\n",
            "route path",
        );
        refused(
            "  a: {image: a, port: 80, health: {http: \"/h\\nprogram p\"}}\n",
            "health check path",
        );
        refused(
            "  a: {image: a, port: 80, health: {http: '/h x'}}\n",
            "health check path",
        );
        refused(
            "  a: {image: a, port: 80, health: {http: '/h#x'}}\n",
            "health check path",
        );
        // Paths URLs allow render, with regex characters escaped.
        let s = stack(
            "name: t\nservices:\n  a:\n    image: a\n    port: 80\n    health: {http: '/health?full=1&x=(y)'}\n    routes: [{path: '/v1.0+x', strip_prefix: true}]\n",
        );
        let text = render(BUILTIN_TEMPLATE, &view(&s, "t", &Registry::default())).unwrap();
        assert!(
            text.contains("option httpchk GET /health?full=1&x=(y)\n"),
            "{text}"
        );
        assert!(
            text.contains("acl route2_path path -m str /v1.0+x\n"),
            "{text}"
        );
        assert!(
            text.contains(r"http-request replace-path ^/v1\.0\+x/?(.*)$ /\1 if"),
            "{text}"
        );
    }

    #[test]
    fn template_errors_name_the_line() {
        let v = view(&stack("name: t\n"), "t", &Registry::default());
        let err = render("global\n{{ no_such_thing }}\n", &v).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        let err = render("a\nb\n{% for x in %}\n", &v).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        let err = render("{{ nofunc(1) }}", &v).unwrap_err();
        assert!(
            err.message.contains("nofunc") || err.message.contains("unknown"),
            "{err}"
        );
    }

    #[test]
    fn nginx_template_routes_by_host_then_path() {
        let s = stack(
            "name: t\nservices:\n  api:\n    image: a\n    port: 8080\n    routes: [{host: x.localhost, path: /v1, strip_prefix: true}, /api]\n  web: {image: w, port: 80, routes: [x.localhost, /]}\n",
        );
        let registry = Registry::from_kvs(
            "/services",
            vec![
                instance("api", "c1", 1, "172.18.0.2"),
                instance("api", "c2", 2, "172.18.0.3"),
            ],
        );
        let text = render_for(ProxyKind::Nginx, NGINX_TEMPLATE, &view(&s, "t", &registry)).unwrap();
        std::fs::write(
            std::env::temp_dir().join("devstack-nginx-render.conf"),
            &text,
        )
        .unwrap();
        assert!(
            text.contains("    upstream svc_api {\n        server 172.18.0.2:8080 max_fails=1 fail_timeout=2s;\n        server 172.18.0.3:8080 max_fails=1 fail_timeout=2s;\n    }\n"),
            "{text}"
        );
        // No instance of web: no upstream, a 503 naming it.
        assert!(!text.contains("upstream svc_web"), "{text}");
        assert!(
            text.contains("            return 503 \"devstack: no instance of web is up\";\n"),
            "{text}"
        );
        // x.localhost: /v1 (stripped) to api, the rest to web (its host route).
        let x = text.split("server_name x.localhost;").nth(1).unwrap();
        let x = &x[..x.find("\n    }\n").unwrap()];
        assert!(x.contains("        location = /v1 {\n            proxy_pass http://svc_api/;\n        }\n        location ^~ /v1/ {\n            proxy_pass http://svc_api/;\n        }\n"), "{x}");
        assert!(
            !x.contains("/api"),
            "the host route shadows path routes: {x}"
        );
        assert!(x.contains("        location / {\n            return 503 \"devstack: no instance of web is up\";\n        }"), "{x}");
        // The default server: /api (not stripped) to api, the rest to web.
        let d = text.split("server_name _;").nth(1).unwrap();
        let d = &d[..d.find("\n    }\n").unwrap()];
        assert!(
            d.contains(
                "        location ^~ /api/ {\n            proxy_pass http://svc_api;\n        }\n"
            ),
            "{d}"
        );
        // Service-to-service names.
        assert!(text.contains("server_name api.internal;"), "{text}");
        assert!(text.contains("proxy_next_upstream error timeout;"));
        // A path nginx would read as two directives is refused.
        let s = stack("name: t\nservices:\n  a: {image: a, port: 80, routes: ['/a;b']}\n");
        let err = render_for(
            ProxyKind::Nginx,
            NGINX_TEMPLATE,
            &view(&s, "t", &Registry::default()),
        )
        .unwrap_err();
        assert!(err.message.contains("nginx configuration"), "{err}");
        assert!(render(BUILTIN_TEMPLATE, &view(&s, "t", &Registry::default())).is_ok());
    }

    #[test]
    fn confd_style_templates_read_keys() {
        let s = stack("name: t\nservices:\n  web: {image: w, port: 80}\n");
        let registry = Registry::from_kvs(
            "/services",
            vec![("/services/web/w1".to_string(), "10.0.0.1:80".to_string())],
        );
        let text = render(
            "{% for v in getvs('/services/web/*') %}server {{ v }}\n{% endfor %}{% for kv in gets('/services/*/*') %}{{ kv.key }}\n{% endfor %}",
            &view(&s, "t", &registry),
        )
        .unwrap();
        assert_eq!(text, "server 10.0.0.1:80\n/services/web/w1\n");
    }
}
