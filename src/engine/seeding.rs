//! Seeding, carried out: before `up` starts any container, each seeded
//! datastore's data volume is judged (`seed::decide`) and created, or
//! reset after an unfinished seed; once the datastore is ready, its seed
//! files are copied into its first replica through the archive API and
//! loaded with the server's own client by `exec`, then the marker volume
//! `<volume>-seeded` is made (see ARCHITECTURE.md, "Seed data").

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::datastore::seed::{self, SeedAction, SeedError, VolumeSeen, SEED_DIR};
use crate::engine::progress::{Progress, Reporter};
use crate::engine::{Engine, EngineError};
use crate::plan::names::{self, LABEL_SEED, LABEL_SEEDED};
use crate::spec::{Datastore, Stack};

/// A file's name and content.
type NamedFile = (String, Vec<u8>);

/// The value of `dev.devstack.seed` on a data volume made to be seeded.
const WANTED: &str = "wanted";

/// Why seeding stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Makes the data volume of every datastore among `units` that has seed data
/// and needs it seeded (a new volume, or one whose seed never finished,
/// which is removed with the datastore's containers first), and returns
/// those datastores. Runs before anything of the stack is started.
pub async fn prepare(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    units: &[String],
    reporter: &Reporter,
) -> Result<BTreeSet<String>, EngineError> {
    let mut to_seed = BTreeSet::new();
    for unit in units {
        let Some(ds) = stack.datastores.get(unit) else {
            continue;
        };
        let Some((volume, _)) = crate::plan::data_volume(stack, unit) else {
            continue;
        };
        let full = names::volume_name(project, &volume);
        let marker_name = names::volume_name(project, &names::seeded_marker(&volume));
        let seen = engine.volume_info(&full).await?.map(|v| VolumeSeen {
            wants_seed: v.labels.get(LABEL_SEED).map(String::as_str) == Some(WANTED),
            created: v.created,
        });
        let marker = engine
            .volume_info(&marker_name)
            .await?
            .and_then(|m| m.labels.get(LABEL_SEEDED).cloned());
        match seed::decide(ds.seed.is_some(), seen.as_ref(), marker.as_deref()) {
            SeedAction::Nothing => continue,
            SeedAction::ResetAndSeed => {
                reporter.send(Progress::Container {
                    service: unit.clone(),
                    container: full.clone(),
                    action: "resetting".into(),
                    reason: Some("its seed data never finished loading".into()),
                });
                for o in engine.list_project(project).await? {
                    if o.service.as_deref() == Some(unit.as_str()) {
                        engine.stop(&o.id, None).await?;
                        engine.remove(&o.id).await?;
                    }
                }
                engine.remove_volume(&full).await?;
                engine.remove_volume(&marker_name).await?;
            }
            SeedAction::CreateAndSeed => {}
        }
        if engine
            .ensure_volume_with(project, &volume, &[(LABEL_SEED, WANTED)])
            .await?
        {
            reporter.send(Progress::Created {
                object: "volume".into(),
                name: full.clone(),
            });
        }
        place_before_start(engine, stack, project, unit, &full)
            .await
            .map_err(|e| match e {
                LoadError::Engine(e) => e,
                LoadError::Seed(e) => EngineError::Api {
                    what: format!("seeding `{unit}`"),
                    message: e.to_string(),
                },
            })?;
        to_seed.insert(unit.clone());
    }
    Ok(to_seed)
}

/// Puts what a fresh volume must hold before the server first starts (a
/// redis dump) into data volume `full`, through a created, never started
/// container of the datastore's image.
async fn place_before_start(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    unit: &str,
    full: &str,
) -> Result<(), LoadError> {
    let is_redis = stack
        .datastores
        .get(unit)
        .is_some_and(|ds| ds.kind == crate::spec::DatastoreKind::Redis);
    if !is_redis {
        return Ok(());
    }
    let Some((ds, (_, dir), files)) = seed_of(stack, unit).await? else {
        return Ok(());
    };
    let Some(file) = seed::before_start(ds.kind, &files)? else {
        return Ok(());
    };
    let spec = super::snapshot::replica_spec(engine, stack, project, unit)
        .await
        .map_err(|e| match e {
            super::snapshot::SnapshotError::Engine(e) => LoadError::Engine(e),
            super::snapshot::SnapshotError::Refused(m) => {
                LoadError::Engine(EngineError::NotFound(m))
            }
        })?;
    let helper = super::snapshot::helper(&spec, project, &format!("{unit}-seed"), full, &dir);
    let id = engine.create(&helper).await?;
    let placed = engine.upload_files(&id, &dir, &[file], false).await;
    let _ = engine.remove_with_volumes(&id).await;
    Ok(placed?)
}

/// Loads datastore `unit`'s seed into its ready container `container_id`,
/// then marks its data volume seeded. A failure leaves the volume unmarked,
/// so the next `up` starts it again from nothing.
pub async fn load(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    unit: &str,
    (container_id, container_name): (&str, &str),
    deadline: Instant,
    reporter: &Reporter,
) -> Result<(), LoadError> {
    let Some((ds, (volume, data_dir), files)) = seed_of(stack, unit).await? else {
        return Ok(());
    };
    let steps = seed::plan(ds.kind, Some(&data_dir), &files)?;
    // Files by the directory they go to.
    let mut uploads: Vec<(&str, Vec<NamedFile>)> = Vec::new();
    for step in &steps {
        let Some(file) = step.upload.clone() else {
            continue;
        };
        match uploads.iter_mut().find(|(dir, _)| *dir == step.upload_dir) {
            Some((_, files)) => files.push(file),
            None => uploads.push((&step.upload_dir, vec![file])),
        }
    }
    for (dir, files) in &uploads {
        // Only our own scratch directory is made (and made writable by all);
        // a data directory keeps its owner and mode.
        engine
            .upload_files(container_id, dir, files, *dir == SEED_DIR)
            .await?;
    }
    let mut last_file = None;
    for step in &steps {
        if last_file.as_ref() != Some(&step.file) {
            reporter.send(Progress::Probe {
                service: unit.to_string(),
                container: container_name.to_string(),
                detail: format!("loading seed file {}", step.file.display()),
            });
            last_file = Some(step.file.clone());
        }
        if step.argv.is_empty() {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let run = engine.exec_capture(container_id, &step.argv, left).await?;
        match run.exit_code {
            Some(0) => {}
            Some(_) => {
                let (line, message) = seed::locate_error(&run.output);
                return Err(SeedError {
                    file: step.file.clone(),
                    line,
                    message,
                }
                .into());
            }
            None => {
                return Err(SeedError {
                    file: step.file.clone(),
                    line: None,
                    message: "did not finish loading before the `up` timeout".into(),
                }
                .into())
            }
        }
    }
    if uploads.iter().any(|(dir, _)| *dir == SEED_DIR) {
        // Best effort: the files are only a copy.
        let _ = engine
            .exec_capture(
                container_id,
                &["rm".into(), "-rf".into(), SEED_DIR.into()],
                std::time::Duration::from_secs(10),
            )
            .await;
    }
    mark_seeded(engine, project, &volume).await?;
    Ok(())
}

/// Makes the marker volume that vouches for this very data volume (by its creation time).
async fn mark_seeded(engine: &Engine, project: &str, volume: &str) -> Result<(), EngineError> {
    let full = names::volume_name(project, volume);
    let Some(info) = engine.volume_info(&full).await? else {
        return Err(EngineError::NotFound(format!(
            "the data volume `{full}` went away while it was seeded"
        )));
    };
    let marker = names::seeded_marker(volume);
    engine
        .remove_volume(&names::volume_name(project, &marker))
        .await?;
    engine
        .ensure_volume_with(project, &marker, &[(LABEL_SEEDED, &info.created)])
        .await?;
    Ok(())
}

/// Datastore `unit`, its data volume (name, directory) and its seed files;
/// `None` when it has no data volume or no seed.
async fn seed_of<'a>(stack: &'a Stack, unit: &str) -> Result<SeedOf<'a>, LoadError> {
    let (Some(ds), Some(volume)) = (
        stack.datastores.get(unit),
        crate::plan::data_volume(stack, unit),
    ) else {
        return Ok(None);
    };
    let Some(seed_path) = ds.seed.clone() else {
        return Ok(None);
    };
    let files = tokio::task::spawn_blocking(move || read_seed(&seed_path))
        .await
        .map_err(|e| SeedError {
            file: PathBuf::new(),
            line: None,
            message: e.to_string(),
        })??;
    Ok(Some((ds, volume, files)))
}

type SeedOf<'a> = Option<(&'a Datastore, (String, String), Vec<(PathBuf, Vec<u8>)>)>;

/// The seed's files with their contents: the file itself, or a directory's
/// files (not its subdirectories) in name order, as the official images
/// read their init directory.
fn read_seed(seed: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, SeedError> {
    let fail = |path: &Path, e: std::io::Error| SeedError {
        file: path.to_path_buf(),
        line: None,
        message: format!("cannot read it: {e}"),
    };
    let mut paths = Vec::new();
    if seed.is_dir() {
        for entry in std::fs::read_dir(seed).map_err(|e| fail(seed, e))? {
            let path = entry.map_err(|e| fail(seed, e))?.path();
            if path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
    } else {
        paths.push(seed.to_path_buf());
    }
    paths
        .into_iter()
        .map(|p| {
            std::fs::read(&p)
                .map(|c| (p.clone(), c))
                .map_err(|e| fail(&p, e))
        })
        .collect()
}
