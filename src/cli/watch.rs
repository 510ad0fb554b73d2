//! `devstack watch [SERVICE...]`: watch the sources of services with a build,
//! and on each debounced change rebuild and swap (or restart) the service,
//! one line (or one JSON event) per rebuild; `controller::watch` does it.

use super::args::{GlobalArgs, WatchArgs};
use super::stack::load_stack;

pub async fn run(global: &GlobalArgs, args: WatchArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    crate::controller::watch::run(&loaded, &args.services, args.json).await
}
