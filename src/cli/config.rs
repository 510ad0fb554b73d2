//! `devstack config`.

use super::args::{GlobalArgs, ConfigArgs};

pub fn run(_global: &GlobalArgs, _args: ConfigArgs) -> anyhow::Result<u8> {
    anyhow::bail!("being built")
}
