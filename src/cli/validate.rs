//! `devstack validate`.

use super::args::{GlobalArgs, ValidateArgs};

pub fn run(_global: &GlobalArgs, _args: ValidateArgs) -> anyhow::Result<u8> {
    anyhow::bail!("being built")
}
