//! `devstack etcd`: the embedded etcd server on its own, and quick looks at a store.

use clap::{Args, Subcommand};

use super::args::GlobalArgs;
use super::{exit, Failed};

#[derive(Debug, Args)]
pub struct EtcdArgs {
    #[command(subcommand)]
    pub command: EtcdCommand,
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// Run the embedded etcd v3 server in the foreground
    Serve,
}

pub async fn run(_global: &GlobalArgs, _args: EtcdArgs) -> anyhow::Result<u8> {
    Err(Failed::new(exit::NOT_IMPLEMENTED, "`devstack etcd` is not available in this build yet").into())
}
