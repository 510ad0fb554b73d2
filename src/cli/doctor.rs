//! `devstack doctor [--json]`: the engine and its reach paths, as found by
//! `engine::doctor`, in a few lines or as JSON.

use super::args::{DoctorArgs, GlobalArgs};
use crate::ui::doctor::render;
use crate::ui::exit;

pub async fn run(_global: &GlobalArgs, args: DoctorArgs) -> anyhow::Result<u8> {
    let engine = crate::ui::connect().await?;
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let Some(report) = engine.doctor(stop).await? else {
        sayln!("interrupted: the probe's container and network were removed");
        return Ok(exit::INTERRUPTED);
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for line in render(&report) {
            outln!("{line}");
        }
    }
    Ok(if report.ok { exit::OK } else { exit::FAILURE })
}
