//! What devstack knows of each datastore kind, from its official image's
//! conventions: the port it listens on, the readiness check that proves it
//! answers queries (used when the stack gives no `health`), and the
//! connection URL other units get as `${datastores.NAME.url}`.
//!
//! Pure data: nothing here talks to Docker.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{DatastoreKind, Health, Probe};

/// The port the official image's server listens on.
pub fn default_port(kind: DatastoreKind) -> Option<u16> {
    match kind {
        DatastoreKind::Postgres => Some(5432),
        DatastoreKind::Mariadb | DatastoreKind::Mysql => Some(3306),
        DatastoreKind::Redis => Some(6379),
        DatastoreKind::Mongodb => Some(27017),
        DatastoreKind::Elasticsearch => Some(9200),
        DatastoreKind::Kafka => Some(9092),
        DatastoreKind::Etcd => Some(2379),
        DatastoreKind::Memcached => Some(11211),
        DatastoreKind::Generic => None,
    }
}

/// Shell lines that set `u` and `p` to the MariaDB/MySQL account devstack
/// uses: root with its password when the stack gives one (or allows an
/// empty one), else the application user (a random root password is
/// unknown to us). Both spellings of the official images' variables.
pub const MYSQL_ACCOUNT: &str = concat!(
    r#"rp="${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}"; "#,
    r#"if [ -n "$rp" ] || [ -n "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-${MYSQL_ALLOW_EMPTY_PASSWORD:-}}" ] || [ -z "${MARIADB_USER:-${MYSQL_USER:-}}" ]; "#,
    r#"then u=root; p="$rp"; else u="${MARIADB_USER:-${MYSQL_USER:-}}"; p="${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}"; fi; "#,
    r#"db="${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}"; c=$(command -v mariadb || command -v mysql); "#,
);

/// Shell lines that set the postgres role and database the official image
/// creates, and the password for clients that need one.
pub const POSTGRES_ACCOUNT: &str = r#"u="${POSTGRES_USER:-postgres}"; db="${POSTGRES_DB:-$u}"; export PGPASSWORD="${POSTGRES_PASSWORD:-}"; "#;

/// The readiness check of a kind: a command run in the container that
/// succeeds only once the server answers a query, and (for the kinds whose
/// official images run init scripts on a temporary server) only once that
/// phase is over: the check goes over TCP to 127.0.0.1, which the temporary
/// server of the postgres and mariadb/mysql images does not listen on.
pub fn readiness(kind: DatastoreKind) -> Option<Health> {
    let script = match kind {
        DatastoreKind::Postgres => format!(
            "{POSTGRES_ACCOUNT}pg_isready -q -h 127.0.0.1 -U \"$u\" -d \"$db\" && \
             psql -h 127.0.0.1 -U \"$u\" -d \"$db\" -XtAq -c 'select 1' >/dev/null"
        ),
        DatastoreKind::Mariadb | DatastoreKind::Mysql => format!(
            "{MYSQL_ACCOUNT}MYSQL_PWD=\"$p\" \"$c\" --protocol=tcp -h127.0.0.1 -u\"$u\" -e 'SELECT 1' >/dev/null"
        ),
        DatastoreKind::Redis => "[ \"$(redis-cli -h 127.0.0.1 ping)\" = PONG ]".into(),
        DatastoreKind::Memcached => {
            // The official image is Debian (bash) or Alpine (busybox nc).
            "if command -v bash >/dev/null; then bash -c 'exec 3<>/dev/tcp/127.0.0.1/11211 && \
             printf \"version\\r\\n\" >&3 && read -r l <&3 && case $l in VERSION*) exit 0;; esac; exit 1'; \
             else printf 'version\\r\\nquit\\r\\n' | nc 127.0.0.1 11211 | grep -q '^VERSION'; fi"
                .into()
        }
        DatastoreKind::Mongodb => "c=$(command -v mongosh || command -v mongo); \
             \"$c\" --quiet --host 127.0.0.1 --eval 'quit(db.adminCommand({ping: 1}).ok ? 0 : 1)'"
            .into(),
        DatastoreKind::Elasticsearch => "curl -fsS ${ELASTIC_PASSWORD:+-u elastic:$ELASTIC_PASSWORD} \
             'http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow&timeout=1s' >/dev/null"
            .into(),
        DatastoreKind::Kafka => "for b in kafka-broker-api-versions.sh /opt/kafka/bin/kafka-broker-api-versions.sh \
             /opt/bitnami/kafka/bin/kafka-broker-api-versions.sh; do \
             if command -v \"$b\" >/dev/null; then exec \"$b\" --bootstrap-server 127.0.0.1:9092 >/dev/null; fi; done; exit 1"
            .into(),
        // The official etcd image is distroless: no shell, only etcd and etcdctl.
        DatastoreKind::Etcd => {
            return Some(check(vec![
                "etcdctl".into(),
                "--endpoints=http://127.0.0.1:2379".into(),
                "endpoint".into(),
                "health".into(),
            ]))
        }
        DatastoreKind::Generic => return None,
    };
    Some(check(vec!["sh".into(), "-c".into(), script]))
}

/// The command that puts a kind's recent writes on disk before a snapshot
/// (the container is paused for the copy itself); `None` where pausing alone is it.
pub fn flush(kind: DatastoreKind) -> Option<Vec<String>> {
    let script = match kind {
        DatastoreKind::Postgres => {
            format!(r#"{POSTGRES_ACCOUNT}psql -XqA -U "$u" -d "$db" -c CHECKPOINT"#)
        }
        DatastoreKind::Mariadb | DatastoreKind::Mysql => {
            format!(r#"{MYSQL_ACCOUNT}MYSQL_PWD="$p" "$c" -u"$u" -e 'FLUSH TABLES'"#)
        }
        DatastoreKind::Redis => "redis-cli SAVE".into(),
        _ => return None,
    };
    Some(vec!["sh".into(), "-c".into(), script])
}

fn check(argv: Vec<String>) -> Health {
    Health {
        probe: Probe::Command { argv },
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(10),
        retries: 5,
        // Initialisation (initdb, mariadb-install-db, init scripts) counts as start-up.
        start_period: Duration::from_secs(120),
    }
}

/// The URL other units use to reach datastore `name` (its name on the stack
/// network) with the account its env sets up, as the official images read
/// it. `None` for a `generic` datastore, whose protocol is unknown.
pub fn url(kind: DatastoreKind, name: &str, env: &BTreeMap<String, String>) -> Option<String> {
    let get = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| env.get(*k).filter(|v| !v.is_empty()))
            .cloned()
    };
    let port = default_port(kind)?;
    Some(match kind {
        DatastoreKind::Postgres => {
            let user = get(&["POSTGRES_USER"]).unwrap_or_else(|| "postgres".into());
            let db = get(&["POSTGRES_DB"]).unwrap_or_else(|| user.clone());
            let auth = userinfo(&user, get(&["POSTGRES_PASSWORD"]).as_deref());
            format!("postgres://{auth}@{name}:{port}/{}", encode(&db))
        }
        DatastoreKind::Mariadb | DatastoreKind::Mysql => {
            let (user, password) = match get(&["MARIADB_USER", "MYSQL_USER"]) {
                Some(user) => (user, get(&["MARIADB_PASSWORD", "MYSQL_PASSWORD"])),
                None => (
                    "root".into(),
                    get(&["MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD"]),
                ),
            };
            let db = get(&["MARIADB_DATABASE", "MYSQL_DATABASE"]).unwrap_or_default();
            let auth = userinfo(&user, password.as_deref());
            format!("mysql://{auth}@{name}:{port}/{}", encode(&db))
        }
        DatastoreKind::Redis => format!("redis://{name}:{port}"),
        DatastoreKind::Mongodb => {
            let db = get(&["MONGO_INITDB_DATABASE"]).unwrap_or_default();
            match get(&["MONGO_INITDB_ROOT_USERNAME"]) {
                Some(user) => format!(
                    "mongodb://{}@{name}:{port}/{}?authSource=admin",
                    userinfo(&user, get(&["MONGO_INITDB_ROOT_PASSWORD"]).as_deref()),
                    encode(&db)
                ),
                None => format!("mongodb://{name}:{port}/{}", encode(&db)),
            }
        }
        DatastoreKind::Elasticsearch => format!("http://{name}:{port}"),
        // Kafka clients take bootstrap servers, not a URL.
        DatastoreKind::Kafka | DatastoreKind::Memcached => format!("{name}:{port}"),
        DatastoreKind::Etcd => format!("http://{name}:{port}"),
        DatastoreKind::Generic => return None,
    })
}

fn userinfo(user: &str, password: Option<&str>) -> String {
    match password {
        Some(p) => format!("{}:{}", encode(user), encode(p)),
        None => encode(user),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn urls_follow_the_official_images_variables() {
        let cases = [
            (
                DatastoreKind::Postgres,
                env(&[]),
                "postgres://postgres@db:5432/postgres",
            ),
            (
                DatastoreKind::Postgres,
                env(&[("POSTGRES_USER", "app"), ("POSTGRES_PASSWORD", "p@ss word")]),
                "postgres://app:p%40ss%20word@db:5432/app",
            ),
            (
                DatastoreKind::Mariadb,
                env(&[("MARIADB_ROOT_PASSWORD", "r"), ("MARIADB_DATABASE", "shop")]),
                "mysql://root:r@db:3306/shop",
            ),
            (
                DatastoreKind::Mysql,
                env(&[
                    ("MYSQL_USER", "u"),
                    ("MYSQL_PASSWORD", "pw"),
                    ("MYSQL_DATABASE", "d"),
                ]),
                "mysql://u:pw@db:3306/d",
            ),
            (DatastoreKind::Redis, env(&[]), "redis://db:6379"),
            (
                DatastoreKind::Mongodb,
                env(&[
                    ("MONGO_INITDB_ROOT_USERNAME", "a"),
                    ("MONGO_INITDB_ROOT_PASSWORD", "b"),
                ]),
                "mongodb://a:b@db:27017/?authSource=admin",
            ),
            (DatastoreKind::Elasticsearch, env(&[]), "http://db:9200"),
            (DatastoreKind::Kafka, env(&[]), "db:9092"),
            (DatastoreKind::Etcd, env(&[]), "http://db:2379"),
            (DatastoreKind::Memcached, env(&[]), "db:11211"),
        ];
        for (kind, env, want) in cases {
            assert_eq!(url(kind, "db", &env).as_deref(), Some(want), "{kind:?}");
        }
        assert_eq!(url(DatastoreKind::Generic, "db", &env(&[])), None);
    }

    #[test]
    fn every_kind_but_generic_has_a_readiness_check_that_queries_the_server() {
        for (name, kind) in DatastoreKind::ALL {
            let Some(health) = readiness(*kind) else {
                assert_eq!(*kind, DatastoreKind::Generic);
                continue;
            };
            let Probe::Command { argv } = &health.probe else {
                panic!("{name}: not a command probe");
            };
            let text = argv.join(" ");
            let asks = match kind {
                DatastoreKind::Postgres => "select 1",
                DatastoreKind::Mariadb | DatastoreKind::Mysql => "SELECT 1",
                DatastoreKind::Redis => "ping",
                DatastoreKind::Memcached => "version",
                DatastoreKind::Mongodb => "ping: 1",
                DatastoreKind::Elasticsearch => "_cluster/health?wait_for_status=yellow",
                DatastoreKind::Kafka => "kafka-broker-api-versions.sh",
                DatastoreKind::Etcd => "endpoint health",
                DatastoreKind::Generic => unreachable!(),
            };
            assert!(text.contains(asks), "{name}: {text}");
        }
    }
}
