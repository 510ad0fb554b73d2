//! `scale SERVICE=N...`: replicas added or removed and the new ones waited
//! for; the stack file's `replicas` applies again at the next `up`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::up::bring_up;
use super::{state, LoadedStack};
use crate::engine::apply::UpRequest;
use crate::engine::Engine;
use crate::ui::exit;
use crate::ui::progress::{print_failures, print_table, Render};

/// `web=3 worker=0` → {web: 3, worker: 0}; every name must be a unit.
pub fn parse_assignments(
    pairs: &[String],
    known: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, u32>, String> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let (name, n) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` should be SERVICE=N, like web=3"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{n}` in `{pair}` is not a number of replicas"))?;
        if n > 100 {
            return Err(format!(
                "{n} replicas of `{name}` is more than a laptop should run (at most 100)"
            ));
        }
        if !known(name) {
            return Err(format!(
                "`{name}` is not a service or datastore of this stack"
            ));
        }
        out.insert(name.to_string(), n);
    }
    Ok(out)
}

/// Brings the services named to their replica counts, shows the table (URLs
/// only where a routing path runs for the project) and returns the exit code.
pub async fn scale(
    engine: &Engine,
    loaded: &LoadedStack,
    replicas: BTreeMap<String, u32>,
    mode: Render,
    color: bool,
) -> anyhow::Result<u8> {
    let request = UpRequest {
        project: loaded.project.to_string(),
        services: replicas.keys().cloned().collect(),
        replicas,
        timeout: Duration::from_secs(120),
        remove_orphans: false,
        known_healthy: Default::default(),
    };
    let cancel = CancellationToken::new();
    let outcome = bring_up(engine, &loaded.stack, &request, mode, color, &cancel).await?;
    let routing = state::read(&loaded.project)?.map(|_| &[][..]);
    print_table(&loaded.stack, &outcome, routing, color);
    if !outcome.all_healthy() {
        print_failures(&outcome, color);
        return Ok(exit::UNHEALTHY);
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::parse_assignments;

    #[test]
    fn assignments_parse_and_complain_clearly() {
        let known = |s: &str| s == "web";
        assert_eq!(
            parse_assignments(&["web=3".into()], known).unwrap()["web"],
            3
        );
        assert!(parse_assignments(&["web".into()], known)
            .unwrap_err()
            .contains("SERVICE=N"));
        assert!(parse_assignments(&["web=x".into()], known)
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_assignments(&["db=1".into()], known)
            .unwrap_err()
            .contains("not a service"));
    }
}
