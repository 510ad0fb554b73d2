//! `devstack agent` (hidden): runs a detached stack's discovery and routing
//! path (embedded etcd, registrar, proxy, router) until `down` stops it;
//! `controller::agent` starts it and does the work.

use super::args::GlobalArgs;
use super::stack::load_stack;

pub async fn run(global: &GlobalArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let engine = crate::ui::connect().await?;
    crate::controller::agent::run(&loaded, &engine).await
}
