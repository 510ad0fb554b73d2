//! The dependency graph of a stack: which units a partial `up` needs, the
//! order to stop in, and the tasks that must succeed before a unit starts.

use std::collections::{BTreeSet, HashMap};

use crate::spec::Stack;

/// A request that does not fit the stack (a name that is not in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("`{name}` is not a service or datastore of this stack{hint}")]
    UnknownUnit { name: String, hint: String },
    #[error("`{name}` is not a task of this stack{hint}")]
    UnknownTask { name: String, hint: String },
    #[error("the dependencies of `{name}` form a cycle")]
    Cycle { name: String },
}

/// A "did you mean" suffix for a mistyped name.
pub(crate) fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(distance, c)| *distance <= (c.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// The units `up SERVICE...` must bring up: those named and everything they
/// depend on, in stack order. No names means the whole stack.
pub fn dependency_closure(stack: &Stack, selected: &[String]) -> Result<Vec<String>, PlanError> {
    if selected.is_empty() {
        return Ok(stack.units().map(|(n, _, _)| n.to_string()).collect());
    }
    let mut wanted = BTreeSet::new();
    let mut stack_of_names: Vec<String> = Vec::new();
    for name in selected {
        if stack.unit(name).is_none() {
            return Err(PlanError::UnknownUnit {
                name: name.clone(),
                hint: suggest(name, stack.units().map(|(n, _, _)| n)),
            });
        }
        stack_of_names.push(name.clone());
    }
    while let Some(name) = stack_of_names.pop() {
        if !wanted.insert(name.clone()) {
            continue;
        }
        if let Some(unit) = stack.unit(&name) {
            stack_of_names.extend(unit.depends_on.iter().cloned());
        }
        // A task that must run before this unit may use another service's image
        // and environment; that service need not run, so it is not pulled in.
    }
    Ok(stack
        .units()
        .map(|(n, _, _)| n.to_string())
        .filter(|n| wanted.contains(n))
        .collect())
}

/// Every unit in an order where each comes after what it depends on
/// (stable: file order among equals). Reversed, it is the order to stop in.
pub fn start_order(stack: &Stack) -> Result<Vec<String>, PlanError> {
    let names: Vec<&str> = stack.units().map(|(n, _, _)| n).collect();
    let mut remaining: HashMap<&str, usize> = HashMap::new();
    for (name, _, unit) in stack.units() {
        let known = unit
            .depends_on
            .iter()
            .filter(|d| stack.unit(d).is_some())
            .count();
        remaining.insert(name, known);
    }
    let mut order: Vec<String> = Vec::with_capacity(names.len());
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while order.len() < names.len() {
        let next = names
            .iter()
            .find(|n| !done.contains(**n) && remaining.get(**n) == Some(&0));
        let Some(&next) = next else {
            let stuck = names
                .iter()
                .find(|n| !done.contains(**n))
                .map(|n| n.to_string())
                .unwrap_or_default();
            return Err(PlanError::Cycle { name: stuck });
        };
        done.insert(next);
        order.push(next.to_string());
        for (name, _, unit) in stack.units() {
            if unit.depends_on.iter().any(|d| d == next) {
                if let Some(count) = remaining.get_mut(name) {
                    *count = count.saturating_sub(1);
                }
            }
        }
    }
    Ok(order)
}

/// The order to stop units in: dependents before what they depend on.
/// Units the stack no longer knows (orphans) come first.
pub fn stop_order(stack: &Stack) -> Vec<String> {
    let mut order = start_order(stack)
        .unwrap_or_else(|_| stack.units().map(|(n, _, _)| n.to_string()).collect());
    order.reverse();
    order
}

/// The tasks that must run, and succeed, before `unit` starts, in file order.
pub fn tasks_before<'a>(stack: &'a Stack, unit: &str) -> Vec<&'a str> {
    stack
        .tasks
        .iter()
        .filter(|(_, t)| t.before.iter().any(|b| b == unit))
        .map(|(n, _)| n.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::{stack_of, unit};

    #[test]
    fn closure_pulls_in_dependencies_in_file_order() {
        let stack = stack_of(vec![
            ("web", unit("app").deps(&["api"])),
            ("api", unit("app").deps(&["db"])),
            ("db", unit("pg")),
            ("other", unit("app")),
        ]);
        assert_eq!(
            dependency_closure(&stack, &["web".into()]).unwrap(),
            vec!["web", "api", "db"]
        );
        assert_eq!(dependency_closure(&stack, &[]).unwrap().len(), 4);
    }

    #[test]
    fn closure_names_an_unknown_unit_with_a_hint() {
        let stack = stack_of(vec![("web", unit("app"))]);
        let err = dependency_closure(&stack, &["wbe".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`wbe` is not a service or datastore of this stack (did you mean `web`?)"
        );
    }

    #[test]
    fn start_order_puts_dependencies_first_and_stop_order_reverses_it() {
        let stack = stack_of(vec![
            ("web", unit("app").deps(&["api", "cache"])),
            ("api", unit("app").deps(&["db"])),
            ("cache", unit("redis")),
            ("db", unit("pg")),
        ]);
        let order = start_order(&stack).unwrap();
        let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
        assert!(pos("db") < pos("api"));
        assert!(pos("api") < pos("web"));
        assert!(pos("cache") < pos("web"));
        assert_eq!(stop_order(&stack).first().map(String::as_str), Some("web"));
    }

    #[test]
    fn a_cycle_is_an_error_not_a_hang() {
        let stack = stack_of(vec![
            ("a", unit("x").deps(&["b"])),
            ("b", unit("x").deps(&["a"])),
        ]);
        assert!(matches!(start_order(&stack), Err(PlanError::Cycle { .. })));
        assert_eq!(stop_order(&stack).len(), 2);
    }
}
