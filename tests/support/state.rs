//! devstack's state files of a project, where the CLI writes them
//! (`devstack::controller::state::state_root`).

use devstack::controller::state::state_root;

/// The project's routing state file (`routing.json`), as devstack writes it.
pub fn routing_state(project: &str) -> serde_json::Value {
    let path = state_root().join(project).join("routing.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is readable: {e}", path.display()));
    serde_json::from_str(&text).expect("routing.json is JSON")
}
