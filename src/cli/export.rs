//! `devstack export compose|k8s`: the stack written out for a cluster engine.

use std::path::{Path, PathBuf};

use super::args::{ExportArgs, ExportTarget, GlobalArgs};
use super::exit;
use super::stack::load_stack;
use crate::export::{compose, k8s, Export};

pub fn run(global: &GlobalArgs, args: ExportArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let project = loaded.project.as_str().to_string();
    let (output, force, dir_ok) = match &args.target {
        ExportTarget::Compose { output, force, .. } => (output.clone(), *force, false),
        ExportTarget::K8s { output, force, .. } => (output.clone(), *force, true),
    };
    let to_stdout = output.as_deref().is_none_or(|o| o == Path::new("-"));
    let to_dir = dir_ok
        && !to_stdout
        && output
            .as_deref()
            .is_some_and(|o| o.is_dir() || o.to_string_lossy().ends_with('/'));
    let export: Export = match &args.target {
        ExportTarget::Compose {
            no_routing_mesh, ..
        } => {
            let out_dir = match output.as_deref().filter(|_| !to_stdout) {
                Some(o) => o
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(".")),
                None => PathBuf::from("."),
            };
            let out_dir = std::fs::canonicalize(&out_dir).unwrap_or(out_dir);
            let routing = if *no_routing_mesh {
                compose::Routing::Direct
            } else {
                compose::Routing::Mesh
            };
            compose::export_with(&loaded.stack, &project, &out_dir, routing)
        }
        ExportTarget::K8s { namespace, .. } => {
            let namespace = namespace.clone().unwrap_or_else(|| project.clone());
            k8s::export(&loaded.stack, &project, &namespace)
        }
    };
    for lost in &export.lost {
        sayln!("left out: {}: {}", lost.path, lost.why);
    }
    let Some(output) = output.filter(|_| !to_stdout) else {
        out!("{}", export.joined());
        return Ok(exit::OK);
    };
    let writes: Vec<(PathBuf, String)> = if to_dir {
        if let Err(err) = std::fs::create_dir_all(&output) {
            sayln!("error: cannot create {}: {err}", output.display());
            return Ok(exit::FAILURE);
        }
        export
            .files
            .iter()
            .map(|(name, text)| (output.join(name), text.clone()))
            .collect()
    } else {
        vec![(output.clone(), export.joined())]
    };
    if !force {
        if let Some((path, _)) = writes.iter().find(|(p, _)| p.exists()) {
            sayln!(
                "error: {} exists; pass --force to replace it",
                path.display()
            );
            return Ok(exit::FAILURE);
        }
    }
    for (path, text) in &writes {
        if let Err(err) = std::fs::write(path, text) {
            sayln!("error: cannot write {}: {err}", path.display());
            return Ok(exit::FAILURE);
        }
        sayln!("wrote {}", path.display());
    }
    Ok(exit::OK)
}
