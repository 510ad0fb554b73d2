//! `devstack export compose|k8s`: the stack written out for a cluster engine
//! (`export::compose`, `export::k8s`), where `export::output` says.

use std::path::PathBuf;

use super::args::{ExportArgs, ExportTarget, GlobalArgs};
use super::exit;
use super::stack::load_stack;
use crate::export::output::{write_files, Place};
use crate::export::{compose, k8s};

pub fn run(global: &GlobalArgs, args: ExportArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let (stack, project) = (&loaded.stack, loaded.project.as_str());
    let (export, place, force) = match args.target {
        ExportTarget::Compose {
            output,
            force,
            no_routing_mesh,
        } => {
            let place = Place::of(output.as_deref(), false);
            let routing = if no_routing_mesh {
                compose::Routing::Direct
            } else {
                compose::Routing::Mesh
            };
            (
                compose::export_with(stack, project, &place.base_dir(), routing),
                place,
                force,
            )
        }
        ExportTarget::K8s {
            output,
            namespace,
            force,
        } => {
            let namespace = namespace.unwrap_or_else(|| project.to_string());
            let place = Place::of(output.as_deref(), true);
            (k8s::export(stack, project, &namespace), place, force)
        }
    };
    for lost in &export.lost {
        sayln!("left out: {}: {}", lost.path, lost.why);
    }
    let (dir, files): (_, Vec<(PathBuf, String)>) = match &place {
        Place::Stdout => {
            out!("{}", export.joined());
            return Ok(exit::OK);
        }
        Place::File(path) => (None, vec![(path.clone(), export.joined())]),
        Place::Dir(dir) => {
            let files = export.files.iter();
            (
                Some(dir.as_path()),
                files.map(|(n, t)| (dir.join(n), t.clone())).collect(),
            )
        }
    };
    match write_files(dir, &files, force, |p| sayln!("wrote {}", p.display())) {
        Ok(()) => Ok(exit::OK),
        Err(why) => {
            sayln!("error: {why}");
            Ok(exit::FAILURE)
        }
    }
}
