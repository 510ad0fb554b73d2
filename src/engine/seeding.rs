//! Seeding, carried out: before `up` starts any container, each seeded
//! datastore's data volume is judged (`seed::decide`) and created, or
//! reset after an unfinished seed; once the datastore is ready, its seed
//! files are copied into its first replica through the archive API and
//! loaded with the server's own client by `exec`, then the marker volume
//! `<volume>-seeded` is made (see ARCHITECTURE.md, "Seed data").

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::datastore::seed::{self, SeedAction, SeedError, VolumeSeen, SEED_DIR};
use crate::engine::datastore::VolumeInfo;
use crate::engine::exec::ExecOutput;
use crate::engine::progress::{Progress, Reporter};
use crate::engine::{Engine, EngineError};
use crate::plan::names::{self, LABEL_SEED, LABEL_SEEDED};
use crate::spec::{Datastore, Stack};

/// A file's name and content.
type NamedFile = (String, Vec<u8>);

/// The value of `dev.devstack.seed` on a data volume made to be seeded.
const WANTED: &str = "wanted";

/// What loading seed files needs of an engine: the seam [`load`] is written
/// against (the real [`Engine`], and the recording fake in tests, which
/// runs every kind's plan, including kinds no server of is at hand here).
pub trait SeedEngine: Sync {
    /// Places `files` in `dir` of container `id` ([`Engine::upload_files`]).
    fn upload_files(
        &self,
        id: &str,
        dir: &str,
        files: &[NamedFile],
        make_dir: bool,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Runs `argv` in container `id`, its output captured ([`Engine::exec_capture`]).
    fn exec_capture(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, EngineError>> + Send;
    fn volume_info(
        &self,
        full_name: &str,
    ) -> impl Future<Output = Result<Option<VolumeInfo>, EngineError>> + Send;
    fn remove_volume(
        &self,
        full_name: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn ensure_volume_with(
        &self,
        project: &str,
        name: &str,
        extra: &[(&str, &str)],
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
}

impl SeedEngine for Engine {
    async fn upload_files(
        &self,
        id: &str,
        dir: &str,
        files: &[NamedFile],
        make_dir: bool,
    ) -> Result<(), EngineError> {
        Engine::upload_files(self, id, dir, files, make_dir).await
    }
    async fn exec_capture(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, EngineError> {
        Engine::exec_capture(self, id, argv, timeout).await
    }
    async fn volume_info(&self, full_name: &str) -> Result<Option<VolumeInfo>, EngineError> {
        Engine::volume_info(self, full_name).await
    }
    async fn remove_volume(&self, full_name: &str) -> Result<(), EngineError> {
        Engine::remove_volume(self, full_name).await
    }
    async fn ensure_volume_with(
        &self,
        project: &str,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Result<bool, EngineError> {
        Engine::ensure_volume_with(self, project, name, extra).await
    }
}

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
    // Every data volume and its marker looked at at once (a no-op `up`
    // waits on these), then each decided in turn.
    let looked = futures::future::join_all(units.iter().map(|unit| async move {
        let (volume, _) = crate::plan::data_volume(stack, unit)?;
        stack.datastores.get(unit)?;
        let full = names::volume_name(project, &volume);
        let marker_name = names::volume_name(project, &names::seeded_marker(&volume));
        let (seen, marker) =
            futures::future::join(engine.volume_info(&full), engine.volume_info(&marker_name))
                .await;
        Some((volume, full, marker_name, seen, marker))
    }))
    .await;
    for (unit, looked) in units.iter().zip(looked) {
        let Some(ds) = stack.datastores.get(unit) else {
            continue;
        };
        let Some((volume, full, marker_name, seen, marker)) = looked else {
            continue;
        };
        let seen = seen?.map(|v| VolumeSeen {
            wants_seed: v.labels.get(LABEL_SEED).map(String::as_str) == Some(WANTED),
            created: v.created,
        });
        let marker = marker?.and_then(|m| m.labels.get(LABEL_SEEDED).cloned());
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
pub async fn load<E: SeedEngine>(
    engine: &E,
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
                Duration::from_secs(10),
            )
            .await;
    }
    mark_seeded(engine, project, &volume).await?;
    Ok(())
}

/// Makes the marker volume that vouches for this very data volume (by its creation time).
async fn mark_seeded<E: SeedEngine>(
    engine: &E,
    project: &str,
    volume: &str,
) -> Result<(), EngineError> {
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

#[cfg(test)]
mod tests {
    //! Every kind's seed, loaded through the engine seam: the commands and
    //! files devstack gives the engine, for the kinds whose server no
    //! package here has (mysql, mongodb, elasticsearch, kafka). The real
    //! servers (postgres, mariadb, redis, etcd) are in `tests/engine/datastores.rs`.

    use super::*;
    use crate::engine::fake::{Call, FakeEngine};
    use crate::engine::progress::Reporter;
    use crate::engine::ContainerEngine;
    use crate::spec::{load as load_stack, LoadOptions};

    /// A stack whose datastore `db` of `kind` (image `image`) seeds from a
    /// directory holding `files`, and that directory.
    fn stack_with_seed(
        kind: &str,
        image: &str,
        files: &[(&str, &[u8])],
    ) -> (Stack, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a scratch directory");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("a seed file");
        }
        let yaml = format!(
            "name: p\ndatastores:\n  db:\n    kind: {kind}\n    image: {image}\n    env: {{ MYSQL_ROOT_PASSWORD: pw, MYSQL_DATABASE: shop }}\n    seed: {}\n",
            dir.path().display()
        );
        let stack = match load_stack(&LoadOptions::inline("devstack.yaml", &yaml)) {
            Ok(s) => s,
            Err(report) => panic!("{}", report.render(false)),
        };
        (stack, dir)
    }

    /// Loads `db`'s seed with the fake engine (its data volume made first,
    /// as `prepare` does); the outcome and the calls made.
    async fn load_with(engine: &FakeEngine, stack: &Stack) -> (Result<(), LoadError>, Vec<Call>) {
        let (volume, _) = crate::plan::data_volume(stack, "db").expect("a data volume");
        ContainerEngine::ensure_volume(engine, "p", &volume)
            .await
            .expect("the volume is made");
        engine.clear_calls();
        let deadline = Instant::now() + Duration::from_secs(60);
        let result = load(
            engine,
            stack,
            "p",
            "db",
            ("c1", "p-db-1"),
            deadline,
            &Reporter::silent(),
        )
        .await;
        (result, engine.calls())
    }

    fn execs(calls: &[Call]) -> Vec<String> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Exec(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn uploads(calls: &[Call]) -> Vec<String> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Upload(u) => Some(u.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn mysql_mongodb_elasticsearch_and_kafka_seeds_run_in_name_order_and_mark_the_volume() {
        /// Kind, image, seed files, what each file's command holds.
        type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a [u8])>, Vec<&'a str>);
        let cases: [Case; 4] = [
            (
                "mysql",
                "mysql:8.0",
                vec![
                    ("01-schema.sql", b"create table t (id int);\n"),
                    ("02-rows.sql.gz", b"\x1f\x8b"),
                    ("03-more.sh", b"echo hi\n"),
                ],
                vec!["< \"$1\"", "gzip -dc \"$1\" | MYSQL_PWD", "03-more.sh"],
            ),
            (
                "mongodb",
                "mongo:7",
                vec![
                    ("a.js", b"db.x.insertOne({})"),
                    ("users.json", b"[{}]"),
                    ("events.jsonl", b"{}\n"),
                ],
                vec![
                    "mongosh || command -v mongo",
                    "--collection 'events' --file",
                    "--collection 'users' --jsonArray",
                ],
            ),
            (
                "elasticsearch",
                "elasticsearch:8.13.0",
                vec![
                    ("products.json", b"{}"),
                    ("products.ndjson", b"{\"index\":{}}\n{}\n"),
                ],
                vec!["-XPUT 'http://127.0.0.1:9200/products'", "/products/_bulk"],
            ),
            (
                "kafka",
                "apache/kafka:3.7.0",
                vec![("topics", b"orders 3\n"), ("orders.jsonl", b"{}\n")],
                // `topics` runs before `orders.jsonl`, though it sorts after it.
                vec![
                    "kafka-topics.sh --bootstrap-server 127.0.0.1:9092 --create --if-not-exists",
                    "kafka-console-producer.sh --bootstrap-server 127.0.0.1:9092 --topic 'orders'",
                ],
            ),
        ];
        for (kind, image, files, wanted) in cases {
            let (stack, _dir) = stack_with_seed(kind, image, &files);
            let engine = FakeEngine::new();
            let (result, calls) = load_with(&engine, &stack).await;
            assert!(result.is_ok(), "{kind}: {result:?}");
            let run = execs(&calls);
            // One command per file, in name order, then the scratch copies go.
            assert_eq!(run.len(), wanted.len() + 1, "{kind}: {run:#?}");
            for (command, want) in run.iter().zip(&wanted) {
                assert!(command.contains(want), "{kind}: `{want}` not in {command}");
            }
            assert_eq!(
                run.last().map(String::as_str),
                Some("c1: rm -rf /tmp/devstack-seed"),
                "{kind}"
            );
            let placed = uploads(&calls);
            for (name, _) in &files {
                assert!(
                    placed
                        .iter()
                        .any(|u| u.ends_with(&format!("/tmp/devstack-seed/{name}"))
                            || u.contains(&format!(
                                "/tmp/devstack-seed/{}",
                                name.replace(".gz", "")
                            ))),
                    "{kind}: {name} not placed: {placed:?}"
                );
            }
            // Placed before anything runs; the volume is marked after everything ran.
            let first_exec = calls.iter().position(|c| matches!(c, Call::Exec(_)));
            let last_upload = calls.iter().rposition(|c| matches!(c, Call::Upload(_)));
            assert!(last_upload < first_exec, "{kind}: {calls:#?}");
            assert_eq!(
                calls.last(),
                Some(&Call::CreateVolume(format!(
                    "p_{}-seeded",
                    stack_volume(&stack)
                ))),
                "{kind}: {calls:#?}"
            );
        }
    }

    fn stack_volume(stack: &Stack) -> String {
        crate::plan::data_volume(stack, "db")
            .expect("a data volume")
            .0
    }

    #[tokio::test]
    async fn a_failing_seed_of_a_planned_kind_names_its_file_and_leaves_the_volume_unmarked() {
        let (stack, dir) = stack_with_seed(
            "mysql",
            "mysql:8.0",
            &[
                ("01-schema.sql", b"create table t (id int);\n"),
                (
                    "02-bad.sql",
                    b"insert into t values (1);\nselect * from nope;\n",
                ),
                ("03-never.sql", b"select 1;\n"),
            ],
        );
        let engine = FakeEngine::new();
        engine.script(|s| {
            s.exec_fails.push((
                "02-bad.sql".into(),
                "ERROR 1146 (42S02) at line 2: Table 'shop.nope' doesn't exist".into(),
            ))
        });
        let (result, calls) = load_with(&engine, &stack).await;
        let Err(LoadError::Seed(e)) = result else {
            panic!("a failing seed loaded: {result:?}");
        };
        assert_eq!(e.file, dir.path().join("02-bad.sql"));
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("Table 'shop.nope' doesn't exist"), "{e}");
        let run = execs(&calls);
        assert!(!run.iter().any(|c| c.contains("03-never.sql")), "{run:#?}");
        assert!(
            !calls.iter().any(|c| matches!(c, Call::CreateVolume(_))),
            "a failed seed was marked done: {calls:#?}"
        );

        // mongodb's tools report no line: the file and the tool's message.
        let (stack, dir) = stack_with_seed("mongodb", "mongo:7", &[("users.json", b"[{]")]);
        let engine = FakeEngine::new();
        engine.script(|s| {
            s.exec_fails.push((
                "users".into(),
                "Failed: error reading JSON: invalid character ']'".into(),
            ))
        });
        let (result, _) = load_with(&engine, &stack).await;
        let Err(LoadError::Seed(e)) = result else {
            panic!("a failing seed loaded: {result:?}");
        };
        assert_eq!(e.file, dir.path().join("users.json"));
        assert!(e.to_string().contains("users.json"), "{e}");
        assert!(e.message.contains("error reading JSON"), "{e}");
    }
}
