//! `devstack config`: the effective stack, merged, interpolated, defaults applied.

use super::args::{ConfigArgs, GlobalArgs};
use super::exit;
use super::stack::load_stack;

/// What replaces a value that came from an env file.
const MASK: &str = "********";

pub fn run(global: &GlobalArgs, args: ConfigArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let mut stack = loaded.stack;
    if !args.show_secrets {
        // Env-file values are where teams keep credentials: hidden unless asked.
        stack.mask_secrets(MASK);
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&stack)?);
    } else {
        out!("{}", serde_yaml::to_string(&stack)?);
    }
    Ok(exit::OK)
}
