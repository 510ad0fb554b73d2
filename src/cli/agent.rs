//! `devstack agent` (hidden): runs a detached stack's discovery and routing
//! path (embedded etcd, registrar, proxy, router) until `down` stops it;
//! `controller::agent` spawns it and does the work.

use super::args::GlobalArgs;
use super::stack::load_stack;
use crate::controller::agent::{self, ReadyPipe};

pub async fn run(global: &GlobalArgs) -> anyhow::Result<u8> {
    // First, before anything could start a process that would inherit it.
    let ready = ReadyPipe::inherited();
    let mut loaded = load_stack(global)?;
    crate::controller::listen::for_agent(&mut loaded)?;
    let engine = crate::ui::connect().await?;
    agent::run(&loaded, &engine, ready).await
}
