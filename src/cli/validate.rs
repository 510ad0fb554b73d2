//! `devstack validate`: every problem in the stack files, or silence and exit 0.

use super::args::{GlobalArgs, ValidateArgs};
use super::exit;
use super::stack::try_load;
use crate::spec::diagnostic::stderr_color;

pub fn run(global: &GlobalArgs, args: ValidateArgs) -> anyhow::Result<u8> {
    match try_load(global) {
        Ok(loaded) => {
            if args.json {
                outln!("{}", serde_json::json!({ "valid": true, "problems": [] }));
            } else {
                let s = &loaded.stack;
                outln!(
                    "{}: valid ({} services, {} datastores, {} tasks)",
                    s.name,
                    s.services.len(),
                    s.datastores.len(),
                    s.tasks.len()
                );
            }
            Ok(exit::OK)
        }
        Err(report) => {
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                say!("{}", report.render(stderr_color(global.no_color)));
            }
            Ok(exit::FAILURE)
        }
    }
}
