//! `devstack config`: the effective stack, merged, interpolated, defaults applied.

use super::args::{ConfigArgs, GlobalArgs};
use super::exit;
use super::stack::load_stack;
use crate::spec::Stack;

/// What replaces a value that came from an env file.
const MASK: &str = "********";

pub fn run(global: &GlobalArgs, args: ConfigArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let mut stack = loaded.stack;
    if !args.show_secrets {
        mask_secrets(&mut stack);
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&stack)?);
    } else {
        out!("{}", serde_yaml::to_string(&stack)?);
    }
    Ok(exit::OK)
}

/// Env-file values are where teams keep credentials: hide them unless asked.
pub fn mask_secrets(stack: &mut Stack) {
    let containers = stack
        .services
        .values_mut()
        .map(|s| &mut s.container)
        .chain(stack.datastores.values_mut().map(|d| &mut d.container));
    for container in containers {
        for key in &container.secret_env {
            if let Some(value) = container.env.get_mut(key) {
                *value = MASK.to_string();
            }
        }
    }
}
