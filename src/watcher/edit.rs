//! What an edit of the stack file asks of a running stack: which units are
//! swapped, started or removed, and what only a new `up` can apply. Pure: the
//! watch loop carries it out.

use crate::spec::Stack;

/// The work an edited stack file asks for, each list in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StackEdit {
    /// Services whose containers changed: swapped blue-green.
    pub swap: Vec<String>,
    /// Units brought to the file's state by `up`'s own apply: new ones,
    /// services whose replica count changed (after any swap), datastores
    /// that changed (replaced in place: a volume cannot serve two versions).
    pub start: Vec<String>,
    /// Units the file no longer has: stopped and removed.
    pub remove: Vec<String>,
    /// Whether any service's `watch` rules changed (the watchers are remade).
    pub watch_rules: bool,
    /// Changes the routing path reads only when it starts. (Routes and the
    /// proxy template are not among them: the router follows the file.)
    pub later: Vec<String>,
}

impl StackEdit {
    pub fn is_empty(&self) -> bool {
        self.swap.is_empty()
            && self.start.is_empty()
            && self.remove.is_empty()
            && !self.watch_rules
            && self.later.is_empty()
    }
}

/// Compares the running stack with the edited one.
pub fn diff(current: &Stack, next: &Stack) -> StackEdit {
    let mut edit = StackEdit::default();
    for (name, svc) in &next.services {
        match current.services.get(name) {
            None => edit.start.push(name.clone()),
            Some(old) => {
                // The replica count is not the containers' own setting: a
                // new one is reached by starting or removing replicas.
                let mut was = old.container.clone();
                was.replicas = svc.container.replicas;
                if was != svc.container {
                    edit.swap.push(name.clone());
                }
                if old.container.replicas != svc.container.replicas {
                    edit.start.push(name.clone());
                }
            }
        }
    }
    for (name, store) in &next.datastores {
        match current.datastores.get(name) {
            Some(old) if old == store => {}
            _ => edit.start.push(name.clone()),
        }
    }
    for (name, _, _) in current.units() {
        if next.unit(name).is_none() {
            edit.remove.push(name.to_string());
        }
    }
    // What the watchers are made from: each service's build and watch rules.
    let watched = |stack: &Stack| {
        stack
            .services
            .iter()
            .map(|(n, s)| (n.clone(), s.container.build.clone(), s.watch.clone()))
            .collect::<Vec<_>>()
    };
    edit.watch_rules = watched(current) != watched(next);
    if current.discovery != next.discovery {
        edit.later.push("discovery".into());
    }
    let mut proxy = current.proxy.clone();
    proxy.template = next.proxy.template.clone();
    proxy.confd = next.proxy.confd.clone();
    if proxy != next.proxy {
        edit.later.push("the proxy".into());
    }
    edit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{load, LoadOptions};

    fn stack(yaml: &str) -> Stack {
        match load(&LoadOptions::inline("devstack.yaml", yaml)) {
            Ok(s) => s,
            Err(report) => panic!("{}", report.render(false)),
        }
    }

    const BASE: &str = "name: shop
services:
  web:
    image: app:1
    port: 8080
    routes: [shop.localhost]
  api:
    image: app:1
    port: 8080
datastores:
  cache:
    kind: redis
    image: redis:7
";

    #[test]
    fn an_unchanged_file_asks_for_nothing() {
        assert!(diff(&stack(BASE), &stack(BASE)).is_empty());
    }

    #[test]
    fn a_changed_service_is_swapped_alone() {
        let next = BASE.replacen("image: app:1", "image: app:2", 1);
        let edit = diff(&stack(BASE), &stack(&next));
        assert_eq!(edit.swap, ["web"]);
        assert!(edit.start.is_empty() && edit.remove.is_empty() && edit.later.is_empty());
    }

    #[test]
    fn added_and_removed_units_are_started_and_removed() {
        let next = BASE
            .replace("  api:\n    image: app:1\n    port: 8080\n", "")
            .replace(
                "datastores:\n",
                "  worker:\n    image: app:1\ndatastores:\n  db:\n    kind: postgres\n    image: postgres:16\n",
            );
        let edit = diff(&stack(BASE), &stack(&next));
        assert_eq!(edit.start, ["worker", "db"]);
        assert_eq!(edit.remove, ["api"]);
        assert!(edit.swap.is_empty());
    }

    #[test]
    fn a_new_replica_count_is_applied_not_swapped() {
        let next = BASE.replacen("    port: 8080\n", "    port: 8080\n    replicas: 3\n", 1);
        let edit = diff(&stack(BASE), &stack(&next));
        assert!(edit.swap.is_empty(), "{edit:?}");
        assert_eq!(edit.start, ["web"]);
        // With another change as well, the swap comes first, then the count.
        let both = next.replacen("image: app:1", "image: app:2", 1);
        let edit = diff(&stack(BASE), &stack(&both));
        assert_eq!(
            (edit.swap, edit.start),
            (vec!["web".to_string()], vec!["web".to_string()])
        );
    }

    #[test]
    fn a_changed_datastore_is_replaced_not_swapped() {
        let next = BASE.replace("image: redis:7", "image: redis:7.2");
        let edit = diff(&stack(BASE), &stack(&next));
        assert_eq!(edit.start, ["cache"]);
        assert!(edit.swap.is_empty());
    }

    #[test]
    fn routes_are_the_routers_and_the_proxy_waits_for_the_next_up() {
        let next = BASE
            .replace("[shop.localhost]", "[shop.localhost, www.shop.localhost]")
            .replace(
                "datastores:",
                "proxy:\n  listen: 127.0.0.1:8090\ndatastores:",
            );
        let edit = diff(&stack(BASE), &stack(&next));
        assert!(edit.swap.is_empty(), "a route is not the container's");
        assert_eq!(edit.later, ["the proxy"]);
    }
}
