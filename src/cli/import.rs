//! `devstack import`: production definitions written out as a devstack stack file.

use std::path::{Path, PathBuf};

use super::args::{GlobalArgs, ImportArgs};
use super::exit;
use crate::spec::diagnostic::stderr_color;
use crate::spec::import::files::import_files;
use crate::spec::{self, LoadOptions};

pub fn run(global: &GlobalArgs, args: ImportArgs) -> anyhow::Result<u8> {
    let to_stdout = args.output == Path::new("-");
    let out_dir = if to_stdout {
        PathBuf::from(".")
    } else {
        args.output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    };
    let out_dir = std::fs::canonicalize(&out_dir).unwrap_or(out_dir);
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
    let name = if to_stdout {
        out_dir.join("devstack.yaml")
    } else {
        args.output.clone()
    };
    let mut check = LoadOptions::new(vec![name]);
    check.contents = Some(vec![imported.text.clone()]);
    let checked = spec::load(&check);
    if to_stdout {
        out!("{}", imported.text);
    } else {
        if args.output.exists() && !args.force {
            sayln!(
                "error: {} exists; pass --force to replace it",
                args.output.display()
            );
            return Ok(exit::FAILURE);
        }
        if let Err(err) = std::fs::write(&args.output, &imported.text) {
            sayln!("error: cannot write {}: {err}", args.output.display());
            return Ok(exit::FAILURE);
        }
        sayln!("wrote {}", args.output.display());
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
