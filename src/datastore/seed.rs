//! Seed data, planned: which commands load each seed file into a datastore
//! of a given kind, whether a data volume needs seeding, and where in a
//! failing file the server said it failed.
//!
//! Pure: the caller reads the files and runs the steps (see `load.rs`).

use std::path::{Path, PathBuf};

use crate::spec::kinds::{MYSQL_ACCOUNT, POSTGRES_ACCOUNT};
use crate::spec::DatastoreKind;

/// Where seed files are placed inside the datastore's container.
pub const SEED_DIR: &str = "/tmp/devstack-seed";

/// One command that loads (part of) one seed file.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The seed file on this machine, for messages.
    pub file: PathBuf,
    /// Content to place at `<upload_dir>/<upload name>` before the command runs.
    pub upload: Option<(String, Vec<u8>)>,
    /// Where the upload goes: `SEED_DIR`, or a generic datastore's data directory.
    pub upload_dir: String,
    /// The command, run in the datastore's first replica; exit 0 is success.
    pub argv: Vec<String>,
}

/// A seed that cannot be loaded, or failed loading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("seed file {}{}: {message}", file.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct SeedError {
    pub file: PathBuf,
    /// The line the server reported, when it reported one.
    pub line: Option<u64>,
    pub message: String,
}

impl SeedError {
    fn new(file: &Path, message: impl Into<String>) -> Self {
        SeedError {
            file: file.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }
}

/// What `up` does about a datastore's seed, given its data volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedAction {
    /// No seed, or the volume holds it already, or the volume predates
    /// devstack's seed tracking (its data is kept as it is).
    Nothing,
    /// Create the volume (marked as wanting a seed) and seed it once ready.
    CreateAndSeed,
    /// A seed was started on this volume and never finished (a failure, or
    /// a devstack killed meanwhile): remove the datastore's containers and
    /// the volume, then as `CreateAndSeed`. The volume never held more than
    /// its server's initial state and part of the seed.
    ResetAndSeed,
}

/// What is known of a data volume on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSeen {
    /// The engine's creation time, which tells a volume from a later one of the same name.
    pub created: String,
    /// Created by devstack for a datastore with seed data (label `dev.devstack.seed`).
    pub wants_seed: bool,
}

/// Decides what to do about seeding one datastore. `marker` is the creation
/// time of the volume the seeded marker was made for, if there is one.
pub fn decide(has_seed: bool, volume: Option<&VolumeSeen>, marker: Option<&str>) -> SeedAction {
    match (has_seed, volume) {
        (false, _) => SeedAction::Nothing,
        (true, None) => SeedAction::CreateAndSeed,
        (true, Some(v)) if marker == Some(v.created.as_str()) => SeedAction::Nothing,
        (true, Some(v)) if v.wants_seed => SeedAction::ResetAndSeed,
        (true, Some(_)) => SeedAction::Nothing,
    }
}

/// The steps that load `files` (each with its content, in the order given:
/// name order for a directory) into a datastore of `kind`.
/// `data_dir` is where a `generic` datastore's seed files are copied, as
/// they are (devstack knows no client for it).
pub fn plan(
    kind: DatastoreKind,
    data_dir: Option<&str>,
    files: &[(PathBuf, Vec<u8>)],
) -> Result<Vec<Step>, SeedError> {
    let mut steps = Vec::new();
    for (path, content) in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || name.ends_with(".md") {
            continue;
        }
        let upload = || Some((name.clone(), content.clone()));
        let in_container = format!("{SEED_DIR}/{name}");
        let sh = |script: String| {
            vec![
                "sh".to_string(),
                "-c".to_string(),
                script,
                "sh".to_string(),
                in_container.clone(),
            ]
        };
        let unknown = |understood: &str| {
            SeedError::new(
                path,
                format!(
                    "devstack does not know how to load this file into a {} datastore (it loads {understood})",
                    kind.name()
                ),
            )
        };
        // As the official images run their init directory's scripts; for
        // postgres also with the role and database in `PGUSER`/`PGDATABASE`,
        // since the script runs as root here, not as `postgres`.
        let script_step = || {
            let env = match kind {
                DatastoreKind::Postgres => format!(
                    r#"{POSTGRES_ACCOUNT}export POSTGRES_USER="$u" POSTGRES_DB="$db" PGUSER="$u" PGDATABASE="$db"; "#
                ),
                _ => String::new(),
            };
            Step {
                file: path.clone(),
                upload: upload(),
                upload_dir: SEED_DIR.into(),
                argv: sh(format!(
                    r#"{env}if [ -x "$1" ]; then "$1"; else . "$1"; fi"#
                )),
            }
        };
        match kind {
            DatastoreKind::Postgres => {
                let psql = r#"psql -v ON_ERROR_STOP=1 -XqA -U "$u" -d "$db""#;
                let script = if content.starts_with(b"PGDMP") {
                    format!(
                        r#"{POSTGRES_ACCOUNT}pg_restore --exit-on-error --no-owner -U "$u" -d "$db" "$1""#
                    )
                } else if name.ends_with(".sql") {
                    format!(r#"{POSTGRES_ACCOUNT}{psql} -f "$1""#)
                } else if name.ends_with(".sql.gz") {
                    format!(r#"{POSTGRES_ACCOUNT}gzip -dc "$1" | {psql} -f -"#)
                } else if name.ends_with(".sh") {
                    steps.push(script_step());
                    continue;
                } else {
                    return Err(unknown("*.sql, *.sql.gz, *.sh and pg_dump -Fc dumps"));
                };
                steps.push(Step {
                    file: path.clone(),
                    upload: upload(),
                    upload_dir: SEED_DIR.into(),
                    argv: sh(script),
                });
            }
            DatastoreKind::Mariadb | DatastoreKind::Mysql => {
                let client = r#"MYSQL_PWD="$p" "$c" -u"$u" ${db:+--database="$db"}"#;
                let script = if name.ends_with(".sql") {
                    format!(r#"{MYSQL_ACCOUNT}{client} < "$1""#)
                } else if name.ends_with(".sql.gz") {
                    format!(r#"{MYSQL_ACCOUNT}gzip -dc "$1" | {client}"#)
                } else if name.ends_with(".sh") {
                    steps.push(script_step());
                    continue;
                } else {
                    return Err(unknown("*.sql, *.sql.gz and *.sh"));
                };
                steps.push(Step {
                    file: path.clone(),
                    upload: upload(),
                    upload_dir: SEED_DIR.into(),
                    argv: sh(script),
                });
            }
            DatastoreKind::Redis => {
                // Placed in the data volume before the server first starts
                // (`before_start`): the server loads it itself.
                if name.ends_with(".rdb") {
                    continue;
                }
                let text = String::from_utf8_lossy(content);
                steps.push(Step {
                    file: path.clone(),
                    upload: Some((name.clone(), redis_script(&text).into_bytes())),
                    upload_dir: SEED_DIR.into(),
                    // Each command line is followed by an ECHO of its line
                    // number, so the first error is followed by the line it
                    // came from.
                    argv: sh(r#"out=$(redis-cli --no-raw < "$1" | grep -m1 -A1 '^(error)'); [ -z "$out" ] || { echo "$out"; exit 1; }"#.into()),
                });
            }
            DatastoreKind::Etcd => {
                let text = String::from_utf8_lossy(content);
                for (key, value) in etcd_pairs(&text).map_err(|(line, message)| SeedError {
                    file: path.clone(),
                    line: Some(line),
                    message,
                })? {
                    // The official image has no shell: one etcdctl per key.
                    steps.push(Step {
                        file: path.clone(),
                        upload: None,
                        upload_dir: SEED_DIR.into(),
                        argv: vec![
                            "etcdctl".into(),
                            "--endpoints=http://127.0.0.1:2379".into(),
                            "put".into(),
                            "--".into(),
                            key,
                            value,
                        ],
                    });
                }
            }
            DatastoreKind::Mongodb => {
                const MONGO: &str = r#"set -- "$1"; if [ -n "${MONGO_INITDB_ROOT_USERNAME:-}" ]; then set -- "$1" -u "$MONGO_INITDB_ROOT_USERNAME" -p "$MONGO_INITDB_ROOT_PASSWORD" --authenticationDatabase admin; fi; db="${MONGO_INITDB_DATABASE:-test}"; f="$1"; shift; "#;
                let stem = name.split('.').next().unwrap_or_default();
                let script = if name.ends_with(".js") {
                    format!(
                        r#"{MONGO}c=$(command -v mongosh || command -v mongo); "$c" --quiet "$@" "mongodb://127.0.0.1:27017/$db" "$f""#
                    )
                } else if name.ends_with(".jsonl") || name.ends_with(".json") {
                    let array = if name.ends_with(".json") {
                        " --jsonArray"
                    } else {
                        ""
                    };
                    format!(
                        r#"{MONGO}mongoimport --host 127.0.0.1 "$@" --db "$db" --collection '{stem}'{array} --file "$f""#
                    )
                } else if name.ends_with(".archive") || name.ends_with(".archive.gz") {
                    let gzip = if name.ends_with(".gz") { " --gzip" } else { "" };
                    format!(r#"{MONGO}mongorestore --host 127.0.0.1 "$@"{gzip} --archive="$f""#)
                } else {
                    return Err(unknown(
                        "*.js, *.json and *.jsonl (one collection per file) and mongodump archives (*.archive, *.archive.gz)",
                    ));
                };
                steps.push(Step {
                    file: path.clone(),
                    upload: upload(),
                    upload_dir: SEED_DIR.into(),
                    argv: sh(script),
                });
            }
            DatastoreKind::Elasticsearch => {
                let index = name.split('.').next().unwrap_or_default();
                const CURL: &str = r#"curl -sS ${ELASTIC_PASSWORD:+-u elastic:$ELASTIC_PASSWORD} -H 'Content-Type: application/json'"#;
                let script = if name.ends_with(".ndjson") {
                    format!(
                        r#"out=$({CURL} -XPOST 'http://127.0.0.1:9200/{index}/_bulk?refresh=true' --data-binary @"$1") || exit 1; case "$out" in *'"errors":true'*|*'"error":'*) echo "$out" | head -c 2000; exit 1;; esac"#
                    )
                } else if name.ends_with(".json") {
                    format!(
                        r#"out=$({CURL} -XPUT 'http://127.0.0.1:9200/{index}' --data-binary @"$1") || exit 1; case "$out" in *'"error":'*) echo "$out" | head -c 2000; exit 1;; esac"#
                    )
                } else {
                    return Err(unknown(
                        "INDEX.json index definitions and INDEX.ndjson bulk files",
                    ));
                };
                steps.push(Step {
                    file: path.clone(),
                    upload: upload(),
                    upload_dir: SEED_DIR.into(),
                    argv: sh(script),
                });
            }
            DatastoreKind::Kafka => {
                const KAFKA: &str = r#"k() { for d in "" /opt/kafka/bin/ /opt/bitnami/kafka/bin/; do if command -v "$d$1" >/dev/null; then b="$d$1"; shift; "$b" "$@"; return; fi; done; echo "$1: not found" >&2; return 127; }; "#;
                let script = if is_topics_file(path) {
                    format!(
                        r#"{KAFKA}grep -v '^[[:space:]]*\(#\|$\)' "$1" | while read -r t n; do k kafka-topics.sh --bootstrap-server 127.0.0.1:9092 --create --if-not-exists --topic "$t" --partitions "${{n:-1}}" || exit 1; done"#
                    )
                } else if let Some(topic) = name.strip_suffix(".jsonl") {
                    format!(
                        r#"{KAFKA}k kafka-console-producer.sh --bootstrap-server 127.0.0.1:9092 --topic '{topic}' < "$1""#
                    )
                } else {
                    return Err(unknown(
                        "a `topics` file (`NAME PARTITIONS` per line) and TOPIC.jsonl messages",
                    ));
                };
                steps.push(Step {
                    file: path.clone(),
                    upload: upload(),
                    upload_dir: SEED_DIR.into(),
                    argv: sh(script),
                });
            }
            DatastoreKind::Generic if data_dir.is_some() => steps.push(Step {
                file: path.clone(),
                upload: upload(),
                upload_dir: data_dir.unwrap_or_default().to_string(),
                argv: Vec::new(),
            }),
            DatastoreKind::Memcached | DatastoreKind::Generic => {
                return Err(SeedError::new(
                    path,
                    format!(
                        "a {} datastore has no seed format; load data with a task",
                        kind.name()
                    ),
                ))
            }
        }
    }
    if kind == DatastoreKind::Kafka {
        // Topics before messages, whatever the names: a message file run
        // first would auto-create its topic with the broker's defaults, and
        // `--if-not-exists` would then keep those partitions.
        steps.sort_by_key(|step| !is_topics_file(&step.file));
    }
    Ok(steps)
}

/// A kafka seed file that creates topics (`topics`, `NAME.topics`).
fn is_topics_file(path: &std::path::Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n == "topics" || n.ends_with(".topics"))
}

/// The file a fresh volume must hold before the server first starts, as
/// (name in the data directory, content): a redis `.rdb` seed becomes
/// `dump.rdb`, which the server loads at start. At most one.
pub fn before_start(
    kind: DatastoreKind,
    files: &[(PathBuf, Vec<u8>)],
) -> Result<Option<(String, Vec<u8>)>, SeedError> {
    if kind != DatastoreKind::Redis {
        return Ok(None);
    }
    let rdbs: Vec<&(PathBuf, Vec<u8>)> = files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "rdb"))
        .collect();
    match rdbs.as_slice() {
        [] => Ok(None),
        [(_, content)] if content.starts_with(b"REDIS") => {
            Ok(Some(("dump.rdb".into(), content.clone())))
        }
        [(path, _)] => Err(SeedError::new(
            path,
            "not a redis dump: it does not start with `REDIS`",
        )),
        [_, (second, _), ..] => Err(SeedError::new(
            second,
            "a redis seed holds at most one .rdb file",
        )),
    }
}

/// A file of redis commands, each followed by `ECHO devstack-line:N`.
fn redis_script(text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        out.push_str(trimmed);
        out.push('\n');
        out.push_str(&format!("ECHO devstack-line:{}\n", i + 1));
    }
    out
}

/// The key-value pairs of an etcd seed: `key=value` per line (`#` comments
/// and blank lines skipped); an error carries the line number.
fn etcd_pairs(text: &str) -> Result<Vec<(String, String)>, (u64, String)> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                pairs.push((k.trim().to_string(), v.to_string()))
            }
            _ => return Err((n, "expected `key=value`".into())),
        }
    }
    Ok(pairs)
}

/// Where the server said a seed failed, from the client's output: the line
/// (psql's `FILE:LINE:`, mysql's `at line N`, the redis script's
/// `devstack-line:N`) and the message, with the container's path of the
/// file left out.
pub fn locate_error(output: &str) -> (Option<u64>, String) {
    let output = output.trim();
    // psql: `psql:/tmp/devstack-seed/x.sql:3: ERROR:  ...` or `psql:<stdin>:3: ERROR: ...`
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("psql:") {
            let mut parts = rest.splitn(3, ':');
            if let (Some(_), Some(n), Some(msg)) = (parts.next(), parts.next(), parts.next()) {
                if let Ok(n) = n.parse() {
                    return (Some(n), msg.trim().to_string());
                }
            }
        }
    }
    // mysql/mariadb: `ERROR 1064 (42000) at line 2: ...`
    for line in output.lines() {
        if let Some(at) = line.find(" at line ") {
            let rest = &line[at + 9..];
            if let Some((n, msg)) = rest.split_once(':') {
                if let Ok(n) = n.trim().parse() {
                    return (Some(n), format!("{}:{}", &line[..at], msg));
                }
            }
        }
    }
    // redis: the error reply, then the marker of its line.
    if let Some(pos) = output.find("devstack-line:") {
        let n: String = output[pos + 14..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let message = output
            .lines()
            .find(|l| l.starts_with("(error)"))
            .map(|l| l.trim_start_matches("(error)").trim().to_string())
            .unwrap_or_default();
        return (n.parse().ok(), message);
    }
    let message = output.replace(&format!("{SEED_DIR}/"), "");
    (None, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[(&str, &str)]) -> Vec<(PathBuf, Vec<u8>)> {
        names
            .iter()
            .map(|(n, c)| (PathBuf::from("/seed").join(n), c.as_bytes().to_vec()))
            .collect()
    }

    fn commands(kind: DatastoreKind, names: &[(&str, &str)]) -> Vec<String> {
        plan(kind, None, &files(names))
            .unwrap()
            .into_iter()
            .map(|s| s.argv.join(" "))
            .collect()
    }

    #[test]
    fn seeding_is_decided_by_the_volume_and_its_marker() {
        let seen = |wants_seed| VolumeSeen {
            created: "t1".into(),
            wants_seed,
        };
        assert_eq!(decide(false, None, None), SeedAction::Nothing);
        assert_eq!(decide(true, None, None), SeedAction::CreateAndSeed);
        assert_eq!(decide(true, None, Some("t0")), SeedAction::CreateAndSeed);
        assert_eq!(
            decide(true, Some(&seen(true)), Some("t1")),
            SeedAction::Nothing
        );
        // Started and never finished (failed, or killed): start again from nothing.
        assert_eq!(
            decide(true, Some(&seen(true)), None),
            SeedAction::ResetAndSeed
        );
        // A marker of an earlier volume of that name does not count.
        assert_eq!(
            decide(true, Some(&seen(true)), Some("t0")),
            SeedAction::ResetAndSeed
        );
        // A volume made before seeds were tracked keeps its data.
        assert_eq!(decide(true, Some(&seen(false)), None), SeedAction::Nothing);
    }

    #[test]
    fn postgres_loads_sql_compressed_sql_scripts_and_custom_dumps() {
        let c = commands(
            DatastoreKind::Postgres,
            &[
                ("01.sql", "select 1;"),
                ("02.sql.gz", "\x1f"),
                ("03.sh", "echo"),
                ("04.dump", "PGDMP\x01"),
                ("README.md", "notes"),
            ],
        );
        assert_eq!(c.len(), 4, "{c:#?}");
        assert!(
            c[0].contains("psql -v ON_ERROR_STOP=1")
                && c[0].ends_with("-f \"$1\" sh /tmp/devstack-seed/01.sql"),
            "{}",
            c[0]
        );
        assert!(
            c[1].contains("gzip -dc \"$1\" | psql") && c[1].contains("-f -"),
            "{}",
            c[1]
        );
        assert!(c[2].contains(". \"$1\""), "{}", c[2]);
        assert!(c[3].contains("pg_restore --exit-on-error"), "{}", c[3]);
    }

    #[test]
    fn mysql_and_mariadb_feed_sql_to_the_client() {
        for kind in [DatastoreKind::Mariadb, DatastoreKind::Mysql] {
            let c = commands(kind, &[("a.sql", ""), ("b.sql.gz", "")]);
            assert!(
                c[0].contains("< \"$1\"")
                    && c[0].contains("command -v mariadb || command -v mysql"),
                "{}",
                c[0]
            );
            assert!(c[1].contains("gzip -dc \"$1\" | MYSQL_PWD"), "{}", c[1]);
        }
    }

    #[test]
    fn a_file_a_kind_cannot_load_is_refused_by_name() {
        let err = plan(DatastoreKind::Postgres, None, &files(&[("data.csv", "")])).unwrap_err();
        assert_eq!(err.file, PathBuf::from("/seed/data.csv"));
        assert!(err.message.contains("*.sql"), "{err}");
        let err = plan(DatastoreKind::Memcached, None, &files(&[("x", "")])).unwrap_err();
        assert!(err.message.contains("no seed format"), "{err}");
        let copy = plan(DatastoreKind::Generic, Some("/srv"), &files(&[("x", "1")])).unwrap();
        assert_eq!(
            (copy[0].upload_dir.as_str(), copy[0].argv.len()),
            ("/srv", 0)
        );
    }

    #[test]
    fn redis_commands_carry_their_line_numbers() {
        let steps = plan(
            DatastoreKind::Redis,
            None,
            &files(&[("seed.redis", "# users\nSET a 1\n\nHSET h f \"two words\"\n")]),
        )
        .unwrap();
        let (_, body) = steps[0].upload.clone().unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "SET a 1\nECHO devstack-line:2\nHSET h f \"two words\"\nECHO devstack-line:4\n"
        );
    }

    #[test]
    fn a_redis_dump_goes_into_the_volume_before_the_server_starts() {
        let f = files(&[("a.rdb", "REDIS0009..."), ("b.redis", "SET a 1")]);
        assert_eq!(
            before_start(DatastoreKind::Redis, &f)
                .unwrap()
                .map(|(n, _)| n),
            Some("dump.rdb".to_string())
        );
        // Only the commands are loaded once it runs.
        assert_eq!(plan(DatastoreKind::Redis, None, &f).unwrap().len(), 1);
        assert!(before_start(DatastoreKind::Redis, &files(&[("a.rdb", "junk")])).is_err());
        assert_eq!(before_start(DatastoreKind::Postgres, &f).unwrap(), None);
    }

    #[test]
    fn etcd_puts_each_key_with_etcdctl_and_no_shell() {
        let steps = plan(
            DatastoreKind::Etcd,
            None,
            &files(&[("keys", "/a=1\n# c\n/b/c=x=y\n")]),
        )
        .unwrap();
        let argv: Vec<Vec<String>> = steps.into_iter().map(|s| s.argv).collect();
        assert_eq!(argv[0][2..], ["put", "--", "/a", "1"]);
        assert_eq!(argv[1][2..], ["put", "--", "/b/c", "x=y"]);
        let err = plan(
            DatastoreKind::Etcd,
            None,
            &files(&[("keys", "/a=1\nnonsense\n")]),
        )
        .unwrap_err();
        assert_eq!(
            (err.line, err.message.as_str()),
            (Some(2), "expected `key=value`")
        );
    }

    #[test]
    fn mongodb_elasticsearch_and_kafka_plans() {
        let c = commands(
            DatastoreKind::Mongodb,
            &[
                ("a.js", ""),
                ("users.json", ""),
                ("events.jsonl", ""),
                ("all.archive.gz", ""),
            ],
        );
        assert!(c[0].contains("mongosh || command -v mongo"), "{}", c[0]);
        assert!(
            c[1].contains("--collection 'users' --jsonArray"),
            "{}",
            c[1]
        );
        assert!(c[2].contains("--collection 'events' --file"), "{}", c[2]);
        assert!(
            c[3].contains("mongorestore") && c[3].contains("--gzip --archive"),
            "{}",
            c[3]
        );

        let c = commands(
            DatastoreKind::Elasticsearch,
            &[("products.json", "{}"), ("products.ndjson", "")],
        );
        assert!(
            c[0].contains("-XPUT 'http://127.0.0.1:9200/products'"),
            "{}",
            c[0]
        );
        assert!(
            c[1].contains("/products/_bulk") && c[1].contains("\"errors\":true"),
            "{}",
            c[1]
        );

        let c = commands(
            DatastoreKind::Kafka,
            // In name order `orders.jsonl` comes first; topics still run first.
            &[("orders.jsonl", "{}"), ("topics", "orders 3\n")],
        );
        assert!(
            c[0].contains(
                "kafka-topics.sh --bootstrap-server 127.0.0.1:9092 --create --if-not-exists"
            ),
            "{}",
            c[0]
        );
        assert!(
            c[1].contains(
                "kafka-console-producer.sh --bootstrap-server 127.0.0.1:9092 --topic 'orders'"
            ),
            "{}",
            c[1]
        );
    }

    /// The example stacks' seeds are ones devstack loads (issue 12: they
    /// were copied raw and never ran).
    #[test]
    fn the_example_stacks_seeds_plan() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (dir, kind, wants) in [
            (
                "stacks/events/seed/mariadb",
                DatastoreKind::Mariadb,
                "< \"$1\"",
            ),
            (
                "stacks/opinions/seed/mongo",
                DatastoreKind::Mongodb,
                "mongosh || command -v mongo",
            ),
        ] {
            let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .map(|p| (p.clone(), std::fs::read(p).unwrap()))
                .collect();
            files.sort();
            let steps = plan(kind, None, &files).unwrap();
            assert!(!steps.is_empty(), "{dir}");
            assert!(
                steps.iter().all(|s| s.argv.join(" ").contains(wants)),
                "{dir}: {steps:#?}"
            );
        }
    }

    #[test]
    fn errors_are_located_as_each_client_reports_them() {
        assert_eq!(
            locate_error("psql:/tmp/devstack-seed/01.sql:3: ERROR:  relation \"nope\" does not exist\nLINE 1: ..."),
            (Some(3), "ERROR:  relation \"nope\" does not exist".into())
        );
        assert_eq!(
            locate_error("ERROR 1146 (42S02) at line 7: Table 'shop.nope' doesn't exist"),
            (
                Some(7),
                "ERROR 1146 (42S02): Table 'shop.nope' doesn't exist".into()
            )
        );
        assert_eq!(
            locate_error("(error) ERR unknown command 'NOPE', with args beginning with: \n\"devstack-line:5\""),
            (Some(5), "ERR unknown command 'NOPE', with args beginning with:".into())
        );
        assert_eq!(
            locate_error("pg_restore: error: could not open /tmp/devstack-seed/x.dump"),
            (None, "pg_restore: error: could not open x.dump".into())
        );
    }
}
