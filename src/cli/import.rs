//! `devstack import`: production definitions written out as a devstack stack
//! file (`spec::import::files`), where `export::output` says.

use super::args::{GlobalArgs, ImportArgs};
use super::exit;
use crate::export::output::{write_files, Place};
use crate::spec::diagnostic::stderr_color;
use crate::spec::import::files::import_files;
use crate::spec::{self, LoadOptions};

pub fn run(global: &GlobalArgs, args: ImportArgs) -> anyhow::Result<u8> {
    let place = Place::of(Some(&args.output), false);
    let out_dir = place.base_dir();
    let color = stderr_color(global.no_color);
    let imported = match import_files(&args.files, &out_dir) {
        Ok(imported) => imported,
        Err(report) => {
            say!("{}", report.render(color));
            return Ok(exit::FAILURE);
        }
    };
    for line in crate::spec::import::report::render_all(&imported.notes, &imported.sources) {
        sayln!("{line}");
    }
    // The written file must load as it is; say so now if it does not.
    let name = match &place {
        Place::File(path) => path.clone(),
        _ => out_dir.join("devstack.yaml"),
    };
    let mut check = LoadOptions::new(vec![name.clone()]);
    check.contents = Some(vec![imported.text.clone()]);
    let checked = spec::load(&check);
    if place == Place::Stdout {
        out!("{}", imported.text);
    } else {
        let files = [(name, imported.text)];
        if let Err(why) = write_files(None, &files, args.force, |p| {
            sayln!("wrote {}", p.display())
        }) {
            sayln!("error: {why}");
            return Ok(exit::FAILURE);
        }
    }
    match checked {
        Ok(_) => Ok(exit::OK),
        Err(report) => {
            sayln!("the written stack file does not load yet (add what it lacks in an overlay, or edit it):");
            say!("{}", report.render(color));
            Ok(exit::FAILURE)
        }
    }
}
