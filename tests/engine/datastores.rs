//! Datastores as their official images behave, on the replicas of those
//! images: readiness that waits for a server answering queries (past
//! mariadb's init restart), seed data loaded by kind once per fresh volume
//! (every format, a failing file named with its line, a seed that failed or
//! was killed loaded again from nothing by the next `up`), and the URL a
//! service gets as `${datastores.NAME.url}`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// The directory of an inline project's stack file, where its seeds go.
fn dir(p: &Project) -> PathBuf {
    p.files[0]
        .parent()
        .expect("the stack file is in a directory")
        .to_path_buf()
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("the seed directory is made");
    }
    std::fs::write(path, text).expect("the seed file is written");
}

/// `text` gzip-compressed, by the system's gzip.
fn gzip(text: &str) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip runs");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
        .expect("gzip reads");
    child.wait_with_output().expect("gzip ends").stdout
}

fn postgres_stack(seed: &str) -> String {
    format!(
        "name: ds\ndatastores:\n  pg:\n    kind: postgres\n    image: devstack-fixtures/postgres:15\n    env: {{ POSTGRES_PASSWORD: secret }}\n    seed: {seed}\n    stop_grace: 5s\n"
    )
}

/// The answer of one query, through `devstack exec`.
fn psql(p: &Project, query: &str) -> String {
    let out = p.ok(&["exec", "pg", "--", "psql", "-U", "postgres", "-XtAc", query]);
    stdout(&out).trim().to_string()
}

/// The ids in table `items`, in order, comma-separated.
fn ids(p: &Project) -> String {
    psql(p, "select string_agg(id::text, ',' order by id) from items")
}

fn seeded_marker(p: &Project, volume: &str) -> bool {
    p.volumes().contains(&format!("{}_{volume}-seeded", p.name))
}

#[test]
fn postgres_seeds_in_every_format_load_once() {
    let p = Project::inline("pgseed", &postgres_stack("./seed"));
    let seed = dir(&p).join("seed");
    write(
        &seed.join("01-schema.sql"),
        "create table items (id int, name text);\ninsert into items values (1, 'one'), (2, 'two');\n",
    );
    std::fs::write(
        seed.join("02-more.sql.gz"),
        gzip("insert into items values (3, 'three');\n"),
    )
    .expect("the gzip seed is written");
    write(
        &seed.join("03-script.sh"),
        "psql -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -c \"insert into items values (4, 'four')\"\n",
    );
    p.ok(&["up", "--wait"]);
    assert_eq!(
        psql(&p, "select string_agg(name, ',' order by id) from items"),
        "one,two,three,four"
    );
    assert!(seeded_marker(&p, "pg-data"), "{:?}", p.volumes());

    // Once per volume: a later `up` (after `down`) leaves the data alone.
    p.ok(&["down"]);
    p.ok(&["up", "--wait"]);
    assert_eq!(psql(&p, "select count(*) from items"), "4");

    // A pg_dump -Fc file seeds another copy.
    let dump = p.ok(&["exec", "pg", "--", "pg_dump", "-U", "postgres", "-Fc"]);
    assert!(
        dump.stdout.starts_with(b"PGDMP"),
        "not a custom-format dump"
    );
    let copy = Project::inline("pgdump", &postgres_stack("./items.dump"));
    std::fs::write(dir(&copy).join("items.dump"), &dump.stdout).expect("the dump is written");
    copy.ok(&["up", "--wait"]);
    assert_eq!(
        psql(&copy, "select string_agg(name, ',' order by id) from items"),
        "one,two,three,four"
    );
}

#[test]
fn a_failing_seed_names_its_file_and_line_and_the_next_up_starts_again() {
    let p = Project::inline("pgfail", &postgres_stack("./seed"));
    let seed = dir(&p).join("seed");
    write(
        &seed.join("01-schema.sql"),
        "create table items (id int);\ninsert into items values (1), (2);\n",
    );
    write(
        &seed.join("02-bad.sql"),
        "insert into items values (3);\n\ninsert into nope values (1);\n",
    );
    let out = p.run(&["up", "--wait"]);
    assert!(!out.status.success(), "a failing seed must fail `up`");
    let err = stderr(&out) + &stdout(&out);
    assert!(
        err.contains("02-bad.sql, line 3") && err.contains("relation \"nope\" does not exist"),
        "{err}"
    );
    assert!(
        !seeded_marker(&p, "pg-data"),
        "a failed seed was marked done"
    );

    // Fixed, the next `up` loads it from nothing: no row twice.
    write(&seed.join("02-bad.sql"), "insert into items values (3);\n");
    p.ok(&["up", "--wait"]);
    assert_eq!(
        psql(
            &p,
            "select string_agg(id::text, ',' order by id) from items"
        ),
        "1,2,3"
    );
    assert!(seeded_marker(&p, "pg-data"));
}

#[test]
fn a_first_up_killed_during_seeding_is_seeded_by_the_next() {
    let p = Project::inline("pgkill", &postgres_stack("./seed"));
    let seed = dir(&p).join("seed");
    write(
        &seed.join("01-rows.sql"),
        "create table items (id int);\ninsert into items values (1), (2);\n",
    );
    // Keeps the first seed busy until devstack is killed.
    write(&seed.join("02-wait.sh"), "sleep 120\n");
    let mut up = p
        .command(&["up", "--wait"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("devstack up starts");
    let container = format!("{}-pg-1", p.name);
    let loading = eventually(Duration::from_secs(120), || {
        docker(&[
            "exec",
            &container,
            "psql",
            "-U",
            "postgres",
            "-XtAc",
            "select count(*) from items",
        ]) == "2"
    });
    assert!(loading, "the first seed file never loaded");
    up.kill().expect("devstack is killed");
    let _ = up.wait();
    assert!(!seeded_marker(&p, "pg-data"));

    std::fs::remove_file(seed.join("02-wait.sh")).expect("the slow script is removed");
    p.ok(&["up", "--wait"]);
    assert_eq!(
        psql(
            &p,
            "select string_agg(id::text, ',' order by id) from items"
        ),
        "1,2"
    );
}

#[test]
fn mariadb_is_ready_after_its_init_restart_and_seeded_then() {
    let yaml = "name: ds\ndatastores:\n  db:\n    kind: mariadb\n    image: devstack-fixtures/mariadb:10.11\n    env: { MARIADB_ROOT_PASSWORD: rootpw, MARIADB_DATABASE: shop }\n    volumes: [\"./initdb:/docker-entrypoint-initdb.d:ro\"]\n    seed: ./seed\n    stop_grace: 5s\n";
    let p = Project::inline("myseed", yaml);
    // A slow init script keeps the temporary server (socket only) up a while.
    write(&dir(&p).join("initdb/01-slow.sh"), "sleep 4\n");
    let seed = dir(&p).join("seed");
    write(
        &seed.join("01-phase.sql"),
        "create table phase as select @@skip_networking as sn;\ncreate table items (id int);\ninsert into items values (1), (2);\n",
    );
    std::fs::write(
        seed.join("02-more.sql.gz"),
        gzip("insert into items values (3);\n"),
    )
    .expect("the gzip seed is written");
    p.ok(&["up", "--wait"]);
    let query = |q: &str| {
        let out = p.ok(&[
            "exec", "db", "--", "mariadb", "-uroot", "-prootpw", "shop", "-Nse", q,
        ]);
        stdout(&out).trim().to_string()
    };
    assert_eq!(
        query("select sn from phase"),
        "0",
        "seeded into the temporary init server"
    );
    assert_eq!(
        query("select group_concat(id order by id) from items"),
        "1,2,3"
    );

    p.ok(&["down", "--volumes"]);
    write(
        &seed.join("03-bad.sql"),
        "insert into items values (4);\nselect * from nope;\n",
    );
    let out = p.run(&["up", "--wait"]);
    assert!(!out.status.success());
    let err = stderr(&out) + &stdout(&out);
    assert!(
        err.contains("03-bad.sql, line 2") && err.contains("Table 'shop.nope' doesn't exist"),
        "{err}"
    );
}

#[test]
fn redis_commands_load_memcached_answers_and_services_get_urls() {
    let yaml = "name: ds\nservices:\n  app:\n    image: devstack-fixtures/busybox\n    env: { CACHE_URL: '${datastores.cache.url}', MEMCACHED: '${datastores.mc.url}' }\n    depends_on: [cache, mc]\n    stop_grace: 1s\ndatastores:\n  cache:\n    kind: redis\n    image: devstack-fixtures/redis:7.0\n    seed: ./cache.redis\n  mc:\n    kind: memcached\n    image: devstack-fixtures/memcached:1.6\n";
    let p = Project::inline("redisseed", yaml);
    write(
        &dir(&p).join("cache.redis"),
        "# greetings\nSET greeting \"hello world\"\n\nRPUSH list a b c\n",
    );
    p.ok(&["up", "--wait"]);
    let get = p.ok(&["exec", "cache", "--", "redis-cli", "get", "greeting"]);
    assert_eq!(stdout(&get).trim(), "hello world");
    let len = p.ok(&["exec", "cache", "--", "redis-cli", "llen", "list"]);
    assert_eq!(stdout(&len).trim(), "3");
    // The server's own dump seeds another copy, placed before it starts.
    let saved = p.ok(&[
        "exec",
        "cache",
        "--",
        "sh",
        "-c",
        "redis-cli SAVE >/dev/null && cat /data/dump.rdb",
    ]);
    assert!(saved.stdout.starts_with(b"REDIS"), "not a dump");
    let copy = Project::inline(
        "redisrdb",
        "name: ds\ndatastores:\n  cache:\n    kind: redis\n    image: devstack-fixtures/redis:7.0\n    seed: ./seed\n",
    );
    std::fs::create_dir_all(dir(&copy).join("seed")).expect("seed/ is made");
    std::fs::write(dir(&copy).join("seed/cache.rdb"), &saved.stdout).expect("the dump is written");
    copy.ok(&["up", "--wait"]);
    let got = copy.ok(&[
        "exec",
        "cache",
        "--",
        "redis-cli",
        "lrange",
        "list",
        "0",
        "-1",
    ]);
    assert_eq!(
        stdout(&got).split_whitespace().collect::<Vec<_>>(),
        ["a", "b", "c"]
    );

    let env = p.ok(&[
        "exec",
        "app",
        "--",
        "sh",
        "-c",
        "echo $CACHE_URL $MEMCACHED",
    ]);
    assert_eq!(stdout(&env).trim(), "redis://cache:6379 mc:11211");

    p.ok(&["down", "--volumes"]);
    write(&dir(&p).join("cache.redis"), "SET a 1\n\nNOPE x\nSET b 2\n");
    let out = p.run(&["up", "--wait"]);
    assert!(!out.status.success());
    let err = stderr(&out) + &stdout(&out);
    assert!(
        err.contains("cache.redis, line 3") && err.contains("ERR unknown command 'NOPE'"),
        "{err}"
    );
    assert!(
        !err.contains("app: healthy"),
        "a dependent started before its datastore's seed loaded: {err}"
    );
}

/// etcd has no replica image: the Debian base image runs this machine's own
/// etcd and etcdctl (Debian's `etcd-server` and `etcd-client`), mounted in.
#[test]
fn etcd_keys_load_through_etcdctl() {
    let yaml = "name: ds\ndatastores:\n  kv:\n    kind: etcd\n    image: devstack-fixtures/debian:bookworm\n    command: [etcd, --data-dir, /etcd-data, --listen-client-urls, 'http://0.0.0.0:2379', --advertise-client-urls, 'http://kv:2379']\n    volumes: ['./bin/etcd:/usr/local/bin/etcd:ro', './bin/etcdctl:/usr/local/bin/etcdctl:ro']\n    seed: ./keys\n    stop_grace: 2s\n";
    let p = Project::inline("etcdseed", yaml);
    let bin = dir(&p).join("bin");
    std::fs::create_dir_all(&bin).expect("bin/ is made");
    for tool in ["etcd", "etcdctl"] {
        std::fs::copy(Path::new("/usr/bin").join(tool), bin.join(tool))
            .unwrap_or_else(|e| panic!("/usr/bin/{tool} (Debian's etcd packages) is needed: {e}"));
    }
    write(
        &dir(&p).join("keys"),
        "# config\n/config/mode=fast\n/config/greeting=hello = world\n",
    );
    p.ok(&["up", "--wait"]);
    let get = p.ok(&[
        "exec",
        "kv",
        "--",
        "etcdctl",
        "get",
        "--print-value-only",
        "/config/greeting",
    ]);
    assert_eq!(stdout(&get).trim(), "hello = world");
    assert!(seeded_marker(&p, "kv-data"));

    p.ok(&["down", "--volumes"]);
    write(&dir(&p).join("keys"), "/a=1\nnot a pair\n");
    let out = p.run(&["up", "--wait"]);
    assert!(!out.status.success());
    let err = stderr(&out) + &stdout(&out);
    assert!(err.contains("keys, line 2: expected `key=value`"), "{err}");
}

/// Rewrites an inline project's stack file.
fn rewrite(p: &Project, yaml: &str) {
    std::fs::write(&p.files[0], yaml).expect("the stack file is rewritten");
}

#[test]
fn a_snapshot_restores_exactly_its_rows_exported_imported_and_branched() {
    let with_app = |image: &str| {
        format!(
            "name: ds\nservices:\n  app:\n    image: devstack-fixtures/busybox\n    env: {{ DATABASE_URL: '${{datastores.pg.url}}' }}\n    depends_on: [pg]\n    stop_grace: 1s\ndatastores:\n  pg:\n    kind: postgres\n    image: {image}\n    env: {{ POSTGRES_PASSWORD: secret }}\n    seed: ./seed.sql\n    stop_grace: 5s\n"
        )
    };
    let p = Project::inline("pgsnap", &with_app("devstack-fixtures/postgres:15"));
    write(
        &dir(&p).join("seed.sql"),
        "create table items (id int);\ninsert into items values (1), (2);\n",
    );
    p.ok(&["up", "--wait"]);
    // Rows the seed does not give, so a reseeded volume is told from a restored one.
    psql(&p, "insert into items values (7)");
    p.ok(&["data", "snapshot", "before"]);
    let ls = p.ok(&["data", "ls", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls --json is JSON");
    assert_eq!(listed[0]["name"], "before", "{listed}");
    assert_eq!(listed[0]["datastore"], "pg", "{listed}");
    assert_eq!(
        listed[0]["image"], "devstack-fixtures/postgres:15",
        "{listed}"
    );

    psql(
        &p,
        "insert into items values (3); delete from items where id = 1",
    );
    assert_eq!(ids(&p), "2,3,7");
    let app = format!("{}-app-1", p.name);
    let app_started = || docker(&["inspect", "-f", "{{.State.StartedAt}}", &app]);
    let app_before = app_started();

    p.ok(&["data", "restore", "before"]);
    assert_eq!(ids(&p), "1,2,7");
    assert_ne!(
        app_started(),
        app_before,
        "the datastore's dependent was not restarted"
    );
    // The restored volume is not seeded again on the next `up`.
    p.ok(&["up", "--wait"]);
    assert_eq!(ids(&p), "1,2,7");

    // Another image reference: refused before anything is touched, unless --force.
    rewrite(&p, &with_app("devstack-fixtures/postgres:latest"));
    let out = p.run(&["data", "restore", "before"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    rewrite(&p, &with_app("devstack-fixtures/postgres:15"));

    // Handed to a colleague: export, everything gone, import, restore.
    let file = dir(&p).join("before.tar.zst");
    let file = file.to_str().expect("a UTF-8 path");
    p.ok(&["data", "export", "before", file]);
    p.ok(&["down", "--volumes"]);
    p.ok(&["up", "--wait"]);
    assert_eq!(ids(&p), "1,2");
    p.ok(&["data", "import", file]);
    p.ok(&["data", "restore", "before"]);
    assert_eq!(ids(&p), "1,2,7");

    // A branch: a second copy of the stack starting from the snapshot,
    // beside the first, with data of its own.
    let copy = Project::inline("pgbranch", &with_app("devstack-fixtures/postgres:15"));
    write(
        &dir(&copy).join("seed.sql"),
        "create table items (id int);\n",
    );
    copy.ok(&["up", "--wait", "--from-snapshot", "before"]);
    assert_eq!(ids(&copy), "1,2,7");
    psql(&copy, "insert into items values (8)");
    assert_eq!(ids(&copy), "1,2,7,8");
    assert_eq!(ids(&p), "1,2,7", "the branch wrote into the original");

    p.ok(&["data", "rm", "before"]);
    assert!(
        !p.volumes().iter().any(|v| v.contains("snapshot-before")),
        "{:?}",
        p.volumes()
    );
    let out = p.run(&["data", "restore", "before"]);
    assert!(
        stderr(&out).contains("there is no snapshot `before`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_snapshot_under_write_load_restores_to_a_state_postgres_accepts() {
    let p = Project::inline("pgload", &postgres_stack("./seed.sql"));
    write(&dir(&p).join("seed.sql"), "create table items (id int);\n");
    p.ok(&["up", "--wait"]);
    let container = format!("{}-pg-1", p.name);
    // One row per transaction, as fast as the server takes them, until the
    // container goes (the restore removes it).
    docker(&[
        "exec",
        "-d",
        &container,
        "psql",
        "-U",
        "postgres",
        "-Xqc",
        "do $$ begin for i in 1..100000000 loop insert into items values (i); commit; end loop; end $$",
    ]);
    let writing = eventually(Duration::from_secs(60), || {
        docker(&[
            "exec",
            &container,
            "psql",
            "-U",
            "postgres",
            "-XtAc",
            "select count(*) > 100 from items",
        ]) == "t"
    });
    assert!(writing, "the writer never got going");
    p.ok(&["data", "snapshot", "busy"]);
    // And one through the archive API, as with a remote engine, still under load.
    through_archive(&p, &["data", "snapshot", "busy-archive"]);
    assert_eq!(
        psql(
            &p,
            "select count(*) > 0 from pg_stat_activity where query like 'do $$%'"
        ),
        "t",
        "the writer stopped during the snapshots"
    );

    let restored_well = |p: &Project| {
        let logs = postgres_logs(p);
        assert!(recovery_errors(&logs).is_empty(), "{logs}");
        assert!(
            logs.contains("database system is ready to accept connections"),
            "{logs}"
        );
        let rows: u64 = psql(p, "select count(*) from items")
            .parse()
            .expect("a count");
        assert!(rows > 100, "restored {rows} rows");
        // Every id from 1 to the last is there once: the copy is a committed prefix.
        assert_eq!(
            psql(
                p,
                "select count(*) = max(id) and count(distinct id) = count(*) from items"
            ),
            "t"
        );
        rows
    };
    p.ok(&["data", "restore", "busy"]);
    let first = restored_well(&p);
    through_archive(&p, &["data", "restore", "busy-archive"]);
    let second = restored_well(&p);
    assert!(
        second >= first,
        "the later snapshot has fewer rows: {second} < {first}"
    );
}

/// The export `file` with its snapshot renamed `name` and every part's
/// recorded format set to `format`, as a server of that version would have written it.
fn export_with_format(file: &Path, name: &str, format: &str) -> Vec<u8> {
    let input = std::fs::File::open(file).expect("the export opens");
    let mut archive = tar::Archive::new(zstd::Decoder::new(input).expect("it is zstd"));
    let mut out = tar::Builder::new(zstd::Encoder::new(Vec::new(), 3).expect("zstd writes"));
    for entry in archive.entries().expect("it is a tar") {
        let mut entry = entry.expect("an entry reads");
        let path = entry.path().expect("a path").into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("the entry reads");
        if path.to_string_lossy() == "devstack-snapshot.json" {
            let mut manifest: serde_json::Value =
                serde_json::from_slice(&data).expect("the manifest is JSON");
            manifest["name"] = name.into();
            for part in manifest["parts"].as_array_mut().expect("parts") {
                part["format"] = format.into();
            }
            data = serde_json::to_vec(&manifest).expect("JSON writes");
        }
        let mut header = entry.header().clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.append_data(&mut header, &path, data.as_slice())
            .expect("the entry writes");
    }
    out.into_inner()
        .expect("the tar ends")
        .finish()
        .expect("zstd ends")
}

#[test]
fn a_snapshot_of_another_on_disk_format_is_refused_unless_forced() {
    let p = Project::inline("pgformat", &postgres_stack("./seed.sql"));
    write(
        &dir(&p).join("seed.sql"),
        "create table items (id int);\ninsert into items values (1);\n",
    );
    p.ok(&["up", "--wait"]);
    p.ok(&["data", "snapshot", "now"]);
    let ls = p.ok(&["data", "ls", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls --json is JSON");
    assert_eq!(
        listed[0]["format"], "15",
        "PG_VERSION of the data: {listed}"
    );

    // The same snapshot as a postgres 14 server would have left it, imported.
    let file = dir(&p).join("now.tar.zst");
    p.ok(&[
        "data",
        "export",
        "now",
        file.to_str().expect("a UTF-8 path"),
    ]);
    let older = dir(&p).join("older.tar.zst");
    std::fs::write(&older, export_with_format(&file, "older", "14")).expect("written");
    p.ok(&["data", "import", older.to_str().expect("a UTF-8 path")]);
    psql(&p, "insert into items values (2)");

    let out = p.run(&["data", "restore", "older"]);
    assert!(!out.status.success(), "a 14 snapshot went into a 15 server");
    let err = stderr(&out);
    assert!(
        err.contains("postgres 14 data files") && err.contains("postgres 15"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(ids(&p), "1,2", "a refused restore touched the data");

    // A snapshot of the running format restores; --force overrides the check.
    p.ok(&["data", "restore", "now"]);
    assert_eq!(ids(&p), "1");
    psql(&p, "insert into items values (3)");
    p.ok(&["data", "restore", "older", "--force"]);
    assert_eq!(ids(&p), "1");
}

/// The WAL segment files (24 hex digits) in the `pg_wal` of volume `volume`, in order.
fn wal_segments_in_volume(volume: &str) -> Vec<String> {
    let listed = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/d:ro"),
        "devstack-fixtures/busybox",
        "ls",
        "/d/pg_wal",
    ]);
    let mut names: Vec<String> = listed
        .split_whitespace()
        .filter(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// Everything the postgres container of `p` logged.
fn postgres_logs(p: &Project) -> String {
    let out = Command::new("docker")
        .args(["logs", &format!("{}-pg-1", p.name)])
        .output()
        .expect("docker logs runs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The lines of a postgres log that report a problem: PANIC, FATAL or
/// ERROR, but for the refusals of connections (readiness probes) while it
/// starts up.
fn recovery_errors(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| ["PANIC", "FATAL", "ERROR"].iter().any(|w| l.contains(w)))
        .filter(|l| {
            !l.contains("the database system is starting up")
                && !l.contains("not yet accepting connections")
        })
        .collect()
}

/// `devstack ARGS` with `DEVSTACK_DATA_COPY=archive`: copies through the archive API.
fn through_archive(p: &Project, args: &[&str]) -> String {
    let out = p
        .command(args)
        .env("DEVSTACK_DATA_COPY", "archive")
        .output()
        .expect("devstack runs");
    let text = stderr(&out) + &stdout(&out);
    assert!(out.status.success(), "devstack {args:?}: {text}");
    text
}

#[test]
fn a_snapshot_leaves_out_recycled_wal_and_restores_on_either_copy_path() {
    let p = Project::inline("pgwal", &postgres_stack("./seed.sql"));
    write(&dir(&p).join("seed.sql"), "create table items (id int);\n");
    p.ok(&["up", "--wait"]);
    // About 25 MB of WAL, then a checkpoint: the segments before its redo
    // point are renamed to future names (recycled), still full of old WAL.
    psql(&p, "insert into items select generate_series(1, 400000)");
    psql(&p, "checkpoint");
    let live = stdout(&p.ok(&["exec", "pg", "--", "ls", "/var/lib/postgresql/data/pg_wal"]))
        .split_whitespace()
        .filter(|n| n.len() == 24)
        .count();

    let out = p.ok(&["data", "snapshot", "loaded"]);
    let said = stderr(&out) + &stdout(&out);
    assert!(said.contains("on this host"), "{said}");
    assert!(said.contains("left out"), "{said}");
    let redo = psql(
        &p,
        "select pg_walfile_name(redo_lsn) from pg_control_checkpoint()",
    );
    let insert = psql(&p, "select pg_walfile_name(pg_current_wal_insert_lsn())");
    let kept = wal_segments_in_volume(&format!("{}_snapshot-loaded-pg", p.name));
    assert!(
        !kept.is_empty() && kept.len() < live,
        "kept {kept:?} of {live} segments"
    );
    // Exactly what recovery reads: from the checkpoint's redo segment on, no later than the insert position.
    assert_eq!(kept[0], redo, "{kept:?}");
    assert!(kept[kept.len() - 1] <= insert, "{kept:?} past {insert}");

    psql(&p, "delete from items where id % 2 = 0");
    let out = p.ok(&["data", "restore", "loaded"]);
    let said = stderr(&out) + &stdout(&out);
    assert!(said.contains("on this host"), "{said}");
    assert!(said.contains("restore took"), "{said}");
    assert_eq!(
        psql(
            &p,
            "select count(*) = 400000 and max(id) = 400000 from items"
        ),
        "t"
    );
    let logs = postgres_logs(&p);
    assert!(recovery_errors(&logs).is_empty(), "{logs}");
    // The staging and set-aside volumes are gone, and the snapshot, which
    // kept the fresh copy, restores again.
    assert!(
        !p.volumes()
            .iter()
            .any(|v| v.contains("restore-staging") || v.contains("restore-previous")),
        "{:?}",
        p.volumes()
    );
    psql(&p, "delete from items");
    p.ok(&["data", "restore", "loaded"]);
    assert_eq!(
        psql(&p, "select count(*), max(id) from items"),
        "400000|400000"
    );

    // Through the archive API (a remote engine's way): the same trimming, the same rows.
    psql(&p, "insert into items values (400001)");
    let said = through_archive(&p, &["data", "snapshot", "archived"]);
    assert!(said.contains("through the engine's archive API"), "{said}");
    let kept_archived = wal_segments_in_volume(&format!("{}_snapshot-archived-pg", p.name));
    let redo = psql(
        &p,
        "select pg_walfile_name(redo_lsn) from pg_control_checkpoint()",
    );
    assert_eq!(kept_archived.first(), Some(&redo), "{kept_archived:?}");
    psql(&p, "delete from items");
    let said = through_archive(&p, &["data", "restore", "archived"]);
    assert!(said.contains("through the engine's archive API"), "{said}");
    assert_eq!(
        psql(&p, "select count(*), max(id) from items"),
        "400001|400001"
    );
    let logs = postgres_logs(&p);
    assert!(recovery_errors(&logs).is_empty(), "{logs}");
}
