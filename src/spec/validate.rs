//! Checks that span the whole stack: references resolve, no dependency cycle,
//! no two routes or host ports claimed twice.
//!
//! These run on the typed [`Stack`]; positions are looked up again in the
//! merged YAML tree by field path, so every problem still points at its line.

use std::collections::{BTreeMap, HashMap};

use super::diagnostic::{closest, Problem};
use super::model::{Protocol, Stack};
use super::yaml::{Node, Span, Value};

/// The node at a path of keys and list indexes, or the nearest ancestor that exists.
/// Who publishes a host port: the address, where, and which unit.
type Publisher = (std::net::IpAddr, Span, String);

fn locate<'a>(root: &'a Node, path: &[Seg]) -> &'a Node {
    let mut node = root;
    for seg in path {
        let next = match (seg, &node.value) {
            (Seg::Key(k), Value::Map(_)) => node.get(k),
            (Seg::Index(i), Value::Seq(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    node
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn span(root: &Node, path: &[Seg]) -> Span {
    locate(root, path).span
}

fn section(stack: &Stack, name: &str) -> &'static str {
    if stack.services.contains_key(name) {
        "services"
    } else {
        "datastores"
    }
}

/// Every cross-reference problem in `stack`.
pub fn validate(stack: &Stack, root: &Node) -> Vec<Problem> {
    let mut problems = Vec::new();
    // Names as written, including units that failed to decode: a reference to
    // one of those is not a second problem.
    let unit_names: Vec<&str> = ["services", "datastores"]
        .into_iter()
        .filter_map(|s| root.get(s))
        .flat_map(|n| match &n.value {
            Value::Map(entries) => entries.iter().map(|(k, _)| k.name.as_str()).collect(),
            _ => Vec::new(),
        })
        .collect();
    let declared = |name: &str| unit_names.contains(&name);
    let unknown = |name: &str, what: &str, path: &[Seg], problems: &mut Vec<Problem>| {
        let mut problem = Problem::at(
            span(root, path),
            path_text(path),
            format!("{what} `{name}` does not exist"),
        );
        if let Some(near) = closest(name, unit_names.iter().copied()) {
            problem = problem.hint(format!("did you mean `{near}`?"));
        } else if !unit_names.is_empty() {
            problem = problem.hint(format!("defined: {}", unit_names.join(", ")));
        }
        problems.push(problem);
    };

    // depends_on naming nothing, or itself.
    for (name, _, container) in stack.units() {
        let sec = section(stack, name);
        for (i, dep) in container.depends_on.iter().enumerate() {
            let path = [
                Seg::Key(sec),
                Seg::Key(name),
                Seg::Key("depends_on"),
                Seg::Index(i),
            ];
            if dep == name {
                problems.push(Problem::at(
                    span(root, &path),
                    path_text(&path),
                    format!("`{name}` depends on itself"),
                ));
            } else if !declared(dep) {
                unknown(dep, "dependency", &path, &mut problems);
            }
        }
    }

    // Tasks refer to units.
    for (name, task) in &stack.tasks {
        if let Some(service) = &task.service {
            if !declared(service) {
                let path = [Seg::Key("tasks"), Seg::Key(name), Seg::Key("service")];
                unknown(service, "service", &path, &mut problems);
            }
        }
        for (i, before) in task.before.iter().enumerate() {
            if !declared(before) {
                let path = [
                    Seg::Key("tasks"),
                    Seg::Key(name),
                    Seg::Key("before"),
                    Seg::Index(i),
                ];
                unknown(before, "service", &path, &mut problems);
            }
        }
    }

    // One test suite, run after everything is up: never before a unit.
    let mut marked = stack.tasks.iter().filter(|(_, t)| t.test);
    if let Some((first, _)) = marked.next() {
        for (name, _) in marked {
            let path = [Seg::Key("tasks"), Seg::Key(name), Seg::Key("test")];
            problems.push(
                Problem::at(
                    span(root, &path),
                    path_text(&path),
                    format!("task `{first}` is already the stack's test suite; mark one task `test: true`"),
                )
                .hint("run the others from it, or with `devstack test -- CMD`"),
            );
        }
    }
    for (name, _) in stack
        .tasks
        .iter()
        .filter(|(_, t)| t.test && !t.before.is_empty())
    {
        let path = [Seg::Key("tasks"), Seg::Key(name), Seg::Key("before")];
        problems.push(
            Problem::at(
                span(root, &path),
                path_text(&path),
                format!("task `{name}` is the test suite, which runs once the whole stack is up: it cannot run before a unit"),
            )
            .hint("drop `before`, or make the suite a task of its own"),
        );
    }

    // Names that would mean two things on the stack's network, under the
    // project name the stack gives itself (`-p` is checked by the CLI).
    for (name, _, _) in stack.units() {
        if let Some(why) = name_clash(stack, &stack.name, name) {
            let sec = section(stack, name);
            let path = [Seg::Key(sec), Seg::Key(name)];
            // At the name itself, not at the unit's first field.
            let at = match &locate(root, &[Seg::Key(sec)]).value {
                Value::Map(entries) => entries
                    .iter()
                    .find(|(k, _)| k.name == name)
                    .map(|(k, _)| k.span),
                _ => None,
            };
            problems.push(
                Problem::at(at.unwrap_or(span(root, &path)), path_text(&path), why)
                    .hint("rename one of the two"),
            );
        }
    }

    if let Some(cycle) = find_cycle(stack) {
        let first = &cycle[0];
        let path = [
            Seg::Key(section(stack, first)),
            Seg::Key(first),
            Seg::Key("depends_on"),
        ];
        problems.push(
            Problem::at(
                span(root, &path),
                path_text(&path),
                format!("dependency cycle: {}", cycle.join(" → ")),
            )
            .hint("remove one of these `depends_on` entries"),
        );
    }

    // Two routes claiming the same host and path.
    let mut routes: HashMap<(String, String), (Span, String)> = HashMap::new();
    for (name, service) in &stack.services {
        for (i, route) in service.routes.iter().enumerate() {
            let key = (
                route.host.clone().unwrap_or_else(|| "*".into()),
                route.path.clone().unwrap_or_else(|| "/".into()),
            );
            let path = [
                Seg::Key("services"),
                Seg::Key(name),
                Seg::Key("routes"),
                Seg::Index(i),
            ];
            let here = span(root, &path);
            match routes.get(&key) {
                Some((first, owner)) => problems.push(
                    Problem::at(
                        here,
                        path_text(&path),
                        format!("route {}{} is already claimed by `{owner}`", key.0, key.1),
                    )
                    .related(*first, "first claimed here"),
                ),
                None => {
                    routes.insert(key, (here, name.clone()));
                }
            }
        }
    }

    // Two publishers of one host port; a fixed host port with several replicas.
    let mut ports: BTreeMap<(u16, Protocol), Vec<Publisher>> = BTreeMap::new();
    let proxy_path = [Seg::Key("proxy"), Seg::Key("listen")];
    let proxy_written = root.get("proxy").and_then(|p| p.get("listen")).is_some();
    let proxy_span = span(root, &proxy_path);
    if stack.proxy.listen.port() != 0 {
        ports
            .entry((stack.proxy.listen.port(), Protocol::Tcp))
            .or_default()
            .push((
                stack.proxy.listen.ip(),
                proxy_span,
                if proxy_written {
                    "the proxy".into()
                } else {
                    format!("the proxy (its default `listen` is {})", stack.proxy.listen)
                },
            ));
    }
    for (name, _, container) in stack.units() {
        let sec = section(stack, name);
        for (i, port) in container.ports.iter().enumerate() {
            let Some(host_port) = port.host_port else {
                continue;
            };
            let path = [
                Seg::Key(sec),
                Seg::Key(name),
                Seg::Key("ports"),
                Seg::Index(i),
            ];
            let here = span(root, &path);
            if container.replicas > 1 {
                problems.push(
                    Problem::at(
                        here,
                        path_text(&path),
                        format!(
                            "host port {host_port} cannot be published by {} replicas",
                            container.replicas
                        ),
                    )
                    .hint("omit the host side (the engine picks one per replica), or route through the proxy"),
                );
            }
            let claims = ports.entry((host_port, port.protocol)).or_default();
            if let Some((_, first, owner)) = claims.iter().find(|(ip, _, _)| {
                ip.is_unspecified() || port.host_ip.is_unspecified() || *ip == port.host_ip
            }) {
                let mut problem = Problem::at(
                    here,
                    path_text(&path),
                    format!(
                        "host port {host_port} is already published by {}",
                        owner_text(owner)
                    ),
                );
                if owner.starts_with("the proxy (") {
                    problem =
                        problem.hint("set `proxy.listen` to another port, or change this one");
                } else {
                    problem = problem.related(*first, "first published here");
                }
                problems.push(problem);
            }
            claims.push((port.host_ip, here, name.to_string()));
        }
    }
    problems
}

/// Why the unit `unit` would be confused with another container of `project`
/// (see `plan::names`): its containers are named `<project>-<unit>-<replica>`
/// and answer to `<unit>` on the network, next to the proxy
/// (`<project>-proxy`) and one-off tasks (`<project>-<task>-run-<pid>`).
pub fn name_clash(stack: &Stack, project: &str, unit: &str) -> Option<String> {
    if let Some(task) = unit
        .strip_suffix("-run")
        .filter(|t| stack.tasks.contains_key(*t))
    {
        return Some(format!(
            "`{unit}`'s containers would be named like the task `{task}`'s (`{project}-{task}-run-<n>`)"
        ));
    }
    let rest = unit.strip_prefix(project)?.strip_prefix('-')?;
    if rest == "proxy" {
        return Some(format!(
            "`{unit}` is the name of the stack's proxy container on the network"
        ));
    }
    let (other, replica) = rest.rsplit_once('-')?;
    let is_replica = !replica.is_empty()
        && replica.bytes().all(|b| b.is_ascii_digit())
        && !replica.starts_with('0');
    if is_replica && stack.unit(other).is_some() {
        return Some(format!(
            "`{unit}` is the name of `{other}`'s replica {replica} container on the network"
        ));
    }
    None
}

fn owner_text(owner: &str) -> String {
    if owner.starts_with("the proxy") {
        owner.to_string()
    } else {
        format!("`{owner}`")
    }
}

/// A dependency cycle among units (through `depends_on` and tasks' `before`),
/// as the list of names around it, first name repeated at the end.
pub fn find_cycle(stack: &Stack) -> Option<Vec<String>> {
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, _, container) in stack.units() {
        let deps = edges.entry(name).or_default();
        deps.extend(
            container
                .depends_on
                .iter()
                .map(String::as_str)
                .filter(|d| *d != name),
        );
    }
    // A task that runs before X makes X wait for the task's service's dependencies too.
    for task in stack.tasks.values() {
        if let Some(service) = &task.service {
            for before in &task.before {
                if before != service && stack.unit(service).is_some() {
                    edges
                        .entry(before.as_str())
                        .or_default()
                        .push(service.as_str());
                }
            }
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = edges.keys().map(|k| (*k, Mark::New)).collect();
    let names: Vec<&str> = edges.keys().copied().collect();
    for start in names {
        if marks.get(start) != Some(&Mark::New) {
            continue;
        }
        // Iterative DFS so a long chain cannot overflow the stack.
        let mut stack_: Vec<(&str, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::Active);
        while let Some((node, next)) = stack_.last().copied() {
            let deps = edges.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if next < deps.len() {
                stack_.last_mut().expect("not empty").1 += 1;
                let dep = deps[next];
                match marks.get(dep).copied() {
                    Some(Mark::New) => {
                        marks.insert(dep, Mark::Active);
                        stack_.push((dep, 0));
                    }
                    Some(Mark::Active) => {
                        let from = stack_.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack_[from..].iter().map(|(n, _)| n.to_string()).collect();
                        cycle.push(dep.to_string());
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                marks.insert(node, Mark::Done);
                stack_.pop();
            }
        }
    }
    None
}
