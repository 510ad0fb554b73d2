//! confd's template language: Go's `text/template` (the `gotmpl` crate, a
//! port whose output the differential tests compare with Go's own) with
//! confd's functions over a snapshot of the registry.
//!
//! Pure like `render.rs`: a render reads the [`Store`] it is given and never
//! asks etcd or Docker. (`lookupIP` and `lookupSRV` ask the resolver,
//! `getenv` this process's environment, `fileExists` this machine's files
//! and `datetime` the clock, as they do in confd.)
//!
//! Execution errors of the Go template port carry no position, so a render
//! that fails is run once more over a copy of the template in which every
//! action is preceded by a marker action recording its line; the last
//! marker run names the line that failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gotmpl::{Template, TemplateError, Value};

/// The keys a resource reads, as confd's store holds them: each key with the
/// resource's prefix taken off (always starting with `/`), and its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    kvs: BTreeMap<String, String>,
}

impl Store {
    /// The keys of `kvs` under one of `keys` (full etcd keys), with `prefix`
    /// taken off as confd takes it off.
    pub fn from_registry(kvs: &BTreeMap<String, String>, prefix: &str, keys: &[String]) -> Store {
        let prefix = clean(prefix);
        let mut store = BTreeMap::new();
        for (k, v) in kvs {
            if keys.iter().any(|wanted| k.starts_with(wanted.as_str())) {
                let rest = if prefix == "/" {
                    k.as_str()
                } else {
                    k.strip_prefix(prefix.as_str()).unwrap_or(k)
                };
                store.insert(clean(&format!("/{rest}")), v.clone());
            }
        }
        Store { kvs: store }
    }

    /// A store of these keys as they are (tests, the differential runner).
    pub fn new(kvs: BTreeMap<String, String>) -> Store {
        Store { kvs }
    }

    fn get(&self, key: &str) -> Option<&String> {
        self.kvs.get(key)
    }

    /// confd's `ls`: the names directly below `dir`.
    fn list(&self, dir: &str) -> Vec<String> {
        let prefix = terms(dir);
        let mut names = std::collections::BTreeSet::new();
        for key in self.kvs.keys() {
            if key == dir {
                names.insert(base(key));
                continue;
            }
            if same_prefix(&prefix, &terms(&parent(key))) {
                let rest = key.strip_prefix(dir).unwrap_or(key).trim_start_matches('/');
                names.insert(rest.split('/').next().unwrap_or_default().to_string());
            }
        }
        names.into_iter().collect()
    }

    /// confd's `lsdir`: the names below `dir` that have keys below them.
    fn list_dirs(&self, dir: &str) -> Vec<String> {
        let prefix = terms(dir);
        let mut names = std::collections::BTreeSet::new();
        for key in self.kvs.keys() {
            if key.starts_with(dir) {
                let items = terms(&parent(key));
                if same_prefix(&prefix, &items) && items.len() > prefix.len() {
                    names.insert(items[prefix.len()].clone());
                }
            }
        }
        names.into_iter().collect()
    }

    /// Key-value pairs whose key matches a `path.Match` pattern, by key.
    fn matching(&self, pattern: &str) -> Result<Vec<(&String, &String)>, String> {
        let mut out = Vec::new();
        for (k, v) in &self.kvs {
            if path_match(pattern, k)? {
                out.push((k, v));
            }
        }
        Ok(out)
    }
}

/// Go's `path.Clean`.
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            x => parts.push(x),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Go's `path.Base`.
fn base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".into();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Go's `path.Dir`.
fn parent(p: &str) -> String {
    let cut = p.rfind('/').map(|i| i + 1).unwrap_or(0);
    clean(&p[..cut])
}

fn terms(p: &str) -> Vec<String> {
    clean(p).split('/').map(str::to_string).collect()
}

fn same_prefix(prefix: &[String], test: &[String]) -> bool {
    test.len() >= prefix.len() && prefix.iter().zip(test).all(|(a, b)| a == b)
}

/// Go's `path.Match`: `*` (no `/`), `?`, `[...]` classes with ranges and
/// `^`, `\` escapes.
fn path_match(pattern: &str, name: &str) -> Result<bool, String> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n).ok_or_else(|| format!("syntax error in pattern {pattern:?}"))
}

fn match_from(p: &[char], n: &[char]) -> Option<bool> {
    let Some((&c, rest)) = p.split_first() else {
        return Some(n.is_empty());
    };
    match c {
        '*' => {
            // The shortest run first, never across a `/`.
            for i in 0..=n.len() {
                if i > 0 && n[i - 1] == '/' {
                    break;
                }
                if match_from(rest, &n[i..])? {
                    return Some(true);
                }
            }
            // A malformed pattern is an error even when nothing matched.
            match_from(rest, &[])?;
            Some(false)
        }
        '?' => match n.split_first() {
            Some((&x, tail)) if x != '/' => match_from(rest, tail),
            _ => check_rest(rest),
        },
        '[' => {
            let (matched, after) = class(rest, n.first().copied())?;
            match n.split_first() {
                Some((&x, tail)) if x != '/' && matched => match_from(after, tail),
                _ => check_rest(after),
            }
        }
        '\\' => {
            let (&lit, after) = rest.split_first()?;
            match n.split_first() {
                Some((&x, tail)) if x == lit => match_from(after, tail),
                _ => check_rest(after),
            }
        }
        lit => match n.split_first() {
            Some((&x, tail)) if x == lit => match_from(rest, tail),
            _ => check_rest(rest),
        },
    }
}

/// No match here; the rest of the pattern must still be well formed.
fn check_rest(p: &[char]) -> Option<bool> {
    match_from(p, &[]).map(|_| false)
}

/// A `[...]` class (after the `[`): whether `c` is in it, and what follows.
fn class(p: &[char], c: Option<char>) -> Option<(bool, &[char])> {
    let (negated, mut p) = match p.split_first() {
        Some(('^', rest)) => (true, rest),
        _ => (false, p),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        let (&lo, rest) = p.split_first()?;
        if lo == ']' && !first {
            return Some((matched != negated, rest));
        }
        first = false;
        let (lo, rest) = if lo == '\\' {
            let (&e, r) = rest.split_first()?;
            (e, r)
        } else {
            (lo, rest)
        };
        let (hi, rest) = match rest {
            ['-', h, r @ ..] if *h != ']' => {
                if *h == '\\' {
                    let (&e, r2) = r.split_first()?;
                    (e, r2)
                } else {
                    (*h, r)
                }
            }
            _ => (lo, rest),
        };
        if let Some(c) = c {
            if lo <= c && c <= hi {
                matched = true;
            }
        }
        p = rest;
    }
}

/// Why a template did not render: its line when known, and Go's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

const LINE_MARK: &str = "devstack_confd_line";

fn err(message: impl Into<String>) -> TemplateError {
    TemplateError::Exec(message.into())
}

fn string_arg(name: &str, args: &[Value], i: usize) -> gotmpl::Result<String> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s.to_string()),
        Some(other) => Err(err(format!(
            "{name}: argument {} must be a string, not {}",
            i + 1,
            other.type_name()
        ))),
        None => Err(TemplateError::ArgCount {
            name: name.into(),
            expected: i + 1,
            got: args.len(),
        }),
    }
}

fn int_arg(name: &str, args: &[Value], i: usize) -> gotmpl::Result<i64> {
    match args.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::Uint(n)) => i64::try_from(*n).map_err(|_| err(format!("{name}: {n} too big"))),
        Some(other) => Err(err(format!(
            "{name}: argument {} must be an integer, not {}",
            i + 1,
            other.type_name()
        ))),
        None => Err(TemplateError::ArgCount {
            name: name.into(),
            expected: i + 1,
            got: args.len(),
        }),
    }
}

fn strings(list: Vec<String>) -> Value {
    Value::from(list.into_iter().map(Value::from).collect::<Vec<_>>())
}

fn kv_pair(k: &str, v: &str) -> Value {
    let mut m = BTreeMap::new();
    m.insert("Key".to_string(), Value::from(k));
    m.insert("Value".to_string(), Value::from(v));
    Value::from(m)
}

fn list_of(name: &str, v: &Value) -> gotmpl::Result<Vec<Value>> {
    match v {
        Value::List(items) => Ok(items.to_vec()),
        Value::Nil => Ok(vec![]),
        other => Err(err(format!(
            "{name}: needs a list, not {}",
            other.type_name()
        ))),
    }
}

/// A JSON value as Go's `encoding/json` gives it to a template.
pub fn from_json(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        // encoding/json gives float64 for every number.
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::from(s),
        serde_json::Value::Array(a) => {
            Value::from(a.into_iter().map(from_json).collect::<Vec<_>>())
        }
        serde_json::Value::Object(o) => Value::from(
            o.into_iter()
                .map(|(k, v)| (k, from_json(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

/// Go's `time.Time` as `fmt` prints it (without the monotonic reading), in UTC.
fn now_text() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let nanos = now.subsec_nanos();
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{frac} +0000 UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn lookup(name: &str, keep: impl Fn(&std::net::IpAddr) -> bool) -> Value {
    use std::net::ToSocketAddrs;
    let mut ips: Vec<String> = (name, 0)
        .to_socket_addrs()
        .map(|addrs| {
            addrs
                .map(|a| a.ip())
                .filter(|ip| keep(ip))
                .map(|ip| ip.to_string())
                .collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    strings(ips)
}

/// One SRV record as confd's `lookupSRV` gives it (Go's `net.SRV`: the
/// fields `.Target`, with its final dot, `.Port`, `.Priority`, `.Weight`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Srv {
    target: String,
    port: u16,
    priority: u16,
    weight: u16,
}

impl Srv {
    fn value(&self) -> Value {
        let mut m = BTreeMap::new();
        m.insert("Target".to_string(), Value::from(self.target.clone()));
        m.insert("Port".to_string(), Value::Int(self.port.into()));
        m.insert("Priority".to_string(), Value::Int(self.priority.into()));
        m.insert("Weight".to_string(), Value::Int(self.weight.into()));
        Value::from(m)
    }
}

/// The name Go's `net.LookupSRV(service, proto, name)` asks for:
/// `_service._proto.name`, or `name` itself when both are empty.
fn srv_query_name(service: &str, proto: &str, name: &str) -> String {
    if service.is_empty() && proto.is_empty() {
        name.to_string()
    } else {
        format!("_{service}._{proto}.{name}")
    }
}

/// Asks the resolver `config` names for the SRV records of `query`, sorted
/// as confd sorts them (by target, port, priority and weight written one
/// after the other, as text). A failed lookup is the template's error, as
/// in confd. The lookup runs on a thread of its own with its own runtime,
/// so it never blocks (or nests in) the caller's runtime.
fn srv_records(
    query: String,
    config: hickory_resolver::config::ResolverConfig,
    options: hickory_resolver::config::ResolverOpts,
) -> Result<Vec<Srv>, String> {
    let lookup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("lookupSRV: {e}"))?;
        runtime.block_on(async {
            let resolver = hickory_resolver::Resolver::builder_with_config(
                config,
                hickory_resolver::name_server::TokioConnectionProvider::default(),
            )
            .with_options(options)
            .build();
            let found = resolver
                .srv_lookup(query.as_str())
                .await
                .map_err(|e| format!("lookupSRV {query}: {e}"))?;
            Ok::<_, String>(
                found
                    .iter()
                    .map(|r| Srv {
                        target: r.target().to_ascii(),
                        port: r.port(),
                        priority: r.priority(),
                        weight: r.weight(),
                    })
                    .collect::<Vec<_>>(),
            )
        })
    });
    let mut records = lookup
        .join()
        .map_err(|_| "lookupSRV: the lookup stopped".to_string())??;
    records.sort_by_cached_key(|r| format!("{}{}{}{}", r.target, r.port, r.priority, r.weight));
    Ok(records)
}

/// A template with confd's functions, over `store`.
fn template(name: &str, store: Arc<Store>, line: Arc<AtomicUsize>) -> Template {
    let s = store.clone();
    let t = Template::new(name).func("exists", move |args| {
        let key = string_arg("exists", args, 0)?;
        Ok(Value::Bool(s.get(&key).is_some()))
    });
    let s = store.clone();
    let t = t.func("get", move |args| {
        let key = string_arg("get", args, 0)?;
        match s.get(&key) {
            Some(v) => Ok(kv_pair(&key, v)),
            None => Err(err(format!("key does not exist: {key}"))),
        }
    });
    let s = store.clone();
    let t = t.func("gets", move |args| {
        let pattern = string_arg("gets", args, 0)?;
        let found = s.matching(&pattern).map_err(err)?;
        Ok(Value::from(
            found
                .into_iter()
                .map(|(k, v)| kv_pair(k, v))
                .collect::<Vec<_>>(),
        ))
    });
    let s = store.clone();
    let t = t.func("getv", move |args| {
        let key = string_arg("getv", args, 0)?;
        match (s.get(&key), args.len()) {
            (Some(v), _) => Ok(Value::from(v.as_str())),
            (None, n) if n > 1 => Ok(Value::from(string_arg("getv", args, 1)?)),
            (None, _) => Err(err(format!("key does not exist: {key}"))),
        }
    });
    let s = store.clone();
    let t = t.func("getvs", move |args| {
        let pattern = string_arg("getvs", args, 0)?;
        let mut values: Vec<String> = s
            .matching(&pattern)
            .map_err(err)?
            .into_iter()
            .map(|(_, v)| v.clone())
            .collect();
        values.sort();
        Ok(strings(values))
    });
    let s = store.clone();
    let t = t.func("ls", move |args| {
        Ok(strings(s.list(&string_arg("ls", args, 0)?)))
    });
    let s = store;
    let t = t.func("lsdir", move |args| {
        Ok(strings(s.list_dirs(&string_arg("lsdir", args, 0)?)))
    });
    let t = t
        .func("base", |args| {
            Ok(Value::from(base(&string_arg("base", args, 0)?)))
        })
        .func("dir", |args| {
            Ok(Value::from(parent(&string_arg("dir", args, 0)?)))
        })
        .func("split", |args| {
            let s = string_arg("split", args, 0)?;
            let sep = string_arg("split", args, 1)?;
            Ok(strings(if sep.is_empty() {
                s.chars().map(String::from).collect()
            } else {
                s.split(sep.as_str()).map(str::to_string).collect()
            }))
        })
        .func("join", |args| {
            let items = list_of("join", args.first().unwrap_or(&Value::Nil))?;
            let sep = string_arg("join", args, 1)?;
            let items: Vec<String> = items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.to_string()),
                    other => Err(err(format!(
                        "join: needs a list of strings, not {}",
                        other.type_name()
                    ))),
                })
                .collect::<gotmpl::Result<_>>()?;
            Ok(Value::from(items.join(&sep)))
        })
        .func("toUpper", |args| {
            Ok(Value::from(string_arg("toUpper", args, 0)?.to_uppercase()))
        })
        .func("toLower", |args| {
            Ok(Value::from(string_arg("toLower", args, 0)?.to_lowercase()))
        })
        .func("contains", |args| {
            let s = string_arg("contains", args, 0)?;
            Ok(Value::Bool(s.contains(&string_arg("contains", args, 1)?)))
        })
        .func("replace", |args| {
            let s = string_arg("replace", args, 0)?;
            let old = string_arg("replace", args, 1)?;
            let new = string_arg("replace", args, 2)?;
            let n = int_arg("replace", args, 3)?;
            Ok(Value::from(if n < 0 {
                s.replace(&old, &new)
            } else {
                s.replacen(&old, &new, n as usize)
            }))
        })
        .func("trimSuffix", |args| {
            let s = string_arg("trimSuffix", args, 0)?;
            let suffix = string_arg("trimSuffix", args, 1)?;
            Ok(Value::from(
                s.strip_suffix(suffix.as_str()).unwrap_or(&s).to_string(),
            ))
        })
        .func("json", |args| {
            let text = string_arg("json", args, 0)?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v @ serde_json::Value::Object(_)) => Ok(from_json(v)),
                Ok(_) => Err(err("json: not a JSON object")),
                Err(e) => Err(err(format!("json: {e}"))),
            }
        })
        .func("jsonArray", |args| {
            let text = string_arg("jsonArray", args, 0)?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v @ serde_json::Value::Array(_)) => Ok(from_json(v)),
                Ok(_) => Err(err("jsonArray: not a JSON array")),
                Err(e) => Err(err(format!("jsonArray: {e}"))),
            }
        })
        .func("getenv", |args| {
            let key = string_arg("getenv", args, 0)?;
            match std::env::var(&key) {
                Ok(v) if !v.is_empty() => Ok(Value::from(v)),
                _ if args.len() > 1 => Ok(Value::from(string_arg("getenv", args, 1)?)),
                _ => Ok(Value::from("")),
            }
        })
        .func("atoi", |args| {
            let s = string_arg("atoi", args, 0)?;
            s.parse::<i64>()
                .map(Value::Int)
                .map_err(|_| err(format!("atoi: parsing {s:?}: invalid syntax")))
        })
        .func("parseBool", |args| {
            let s = string_arg("parseBool", args, 0)?;
            match s.as_str() {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
                "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
                _ => Err(err(format!("parseBool: parsing {s:?}: invalid syntax"))),
            }
        })
        .func("datetime", |_| Ok(Value::from(now_text())))
        .func("lookupIP", |args| {
            Ok(lookup(&string_arg("lookupIP", args, 0)?, |_| true))
        })
        .func("lookupIPV4", |args| {
            Ok(lookup(&string_arg("lookupIPV4", args, 0)?, |ip| {
                ip.is_ipv4()
            }))
        })
        .func("lookupIPV6", |args| {
            Ok(lookup(&string_arg("lookupIPV6", args, 0)?, |ip| {
                ip.is_ipv6()
            }))
        })
        .func("lookupSRV", |args| {
            let query = srv_query_name(
                &string_arg("lookupSRV", args, 0)?,
                &string_arg("lookupSRV", args, 1)?,
                &string_arg("lookupSRV", args, 2)?,
            );
            let (config, options) =
                hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                    err(format!(
                        "lookupSRV: reading the resolver configuration: {e}"
                    ))
                })?;
            let records = srv_records(query, config, options).map_err(err)?;
            Ok(Value::from(
                records.iter().map(Srv::value).collect::<Vec<_>>(),
            ))
        })
        .func("fileExists", |args| {
            let path = string_arg("fileExists", args, 0)?;
            Ok(Value::Bool(std::path::Path::new(&path).exists()))
        })
        .func("map", |args| {
            if args.len() % 2 != 0 {
                return Err(err("map: needs key and value pairs"));
            }
            let mut m = BTreeMap::new();
            for pair in args.chunks(2) {
                let Value::String(k) = &pair[0] else {
                    return Err(err("map: keys must be strings"));
                };
                m.insert(k.to_string(), pair[1].clone());
            }
            Ok(Value::from(m))
        })
        .func("reverse", |args| {
            let mut items = list_of("reverse", args.first().unwrap_or(&Value::Nil))?;
            items.reverse();
            Ok(Value::from(items))
        })
        .func("sortByLength", |args| {
            let mut items = list_of("sortByLength", args.first().unwrap_or(&Value::Nil))?;
            items.sort_by_key(|v| v.as_str().map(str::len).unwrap_or(0));
            Ok(Value::from(items))
        })
        .func("sortKVByLength", |args| {
            let mut items = list_of("sortKVByLength", args.first().unwrap_or(&Value::Nil))?;
            items.sort_by_key(|v| {
                v.field("Key")
                    .and_then(Value::as_str)
                    .map(str::len)
                    .unwrap_or(0)
            });
            Ok(Value::from(items))
        })
        .func("seq", |args| {
            let (first, last) = (int_arg("seq", args, 0)?, int_arg("seq", args, 1)?);
            if last.saturating_sub(first) > 100_000 {
                return Err(err("seq: more than 100000 numbers"));
            }
            Ok(Value::from(
                (first..=last).map(Value::Int).collect::<Vec<_>>(),
            ))
        })
        .func("add", |args| {
            Ok(Value::Int(
                int_arg("add", args, 0)?.wrapping_add(int_arg("add", args, 1)?),
            ))
        })
        .func("sub", |args| {
            Ok(Value::Int(
                int_arg("sub", args, 0)?.wrapping_sub(int_arg("sub", args, 1)?),
            ))
        })
        .func("mul", |args| {
            Ok(Value::Int(
                int_arg("mul", args, 0)?.wrapping_mul(int_arg("mul", args, 1)?),
            ))
        })
        .func("div", |args| {
            let (a, b) = (int_arg("div", args, 0)?, int_arg("div", args, 1)?);
            a.checked_div(b)
                .map(Value::Int)
                .ok_or_else(|| err("div: integer divide by zero"))
        })
        .func("mod", |args| {
            let (a, b) = (int_arg("mod", args, 0)?, int_arg("mod", args, 1)?);
            a.checked_rem(b)
                .map(Value::Int)
                .ok_or_else(|| err("mod: integer divide by zero"))
        })
        .func("base64Encode", |args| {
            use base64::Engine as _;
            let s = string_arg("base64Encode", args, 0)?;
            Ok(Value::from(
                base64::engine::general_purpose::STANDARD.encode(s),
            ))
        })
        .func("base64Decode", |args| {
            use base64::Engine as _;
            let s = string_arg("base64Decode", args, 0)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| err(format!("base64Decode: {e}")))?;
            Ok(Value::from(String::from_utf8_lossy(&bytes).into_owned()))
        });
    t.func(LINE_MARK, move |args| {
        if let Some(n) = args.first().and_then(Value::as_int) {
            line.store(n as usize, Ordering::Relaxed);
        }
        Ok(Value::from(""))
    })
    .max_range_iters(1_000_000)
}

/// Renders `text` (the template named `name`) with confd's functions over
/// `store`, with `data` as dot (confd gives none: `Value::Nil`).
pub fn render(name: &str, text: &str, store: &Store, data: &Value) -> Result<String, RenderError> {
    // The port stops parsing silently at an `{{end}}` or `{{else}}` outside
    // any block and renders only what came before; Go refuses it.
    if let Some((line, word)) = stray_block_word(text) {
        return Err(RenderError {
            line: Some(line),
            message: format!("unexpected {{{{{word}}}}}"),
        });
    }
    let store = Arc::new(store.clone());
    let line = Arc::new(AtomicUsize::new(0));
    let parsed = template(name, store.clone(), line.clone())
        .parse(text)
        .map_err(|e| match &e {
            TemplateError::Parse { line, message, .. }
            | TemplateError::Lex { line, message, .. } => RenderError {
                line: Some(*line),
                message: message.clone(),
            },
            _ => RenderError {
                line: None,
                message: e.to_string(),
            },
        })?;
    match parsed.execute_to_string(data) {
        Ok(out) => Ok(out),
        Err(e) => {
            // Again, with every action's line recorded as it runs.
            let marked = template(name, store, line.clone())
                .parse(&with_line_marks(text))
                .and_then(|t| t.execute_to_string(data));
            let at = line.load(Ordering::Relaxed);
            Err(RenderError {
                line: (marked.is_err() && at > 0).then_some(at),
                message: e.to_string(),
            })
        }
    }
}

/// `text` with `{{devstack_confd_line N}}` before every action, N the
/// action's line. Strings, raw strings, characters and comments inside an
/// action are skipped over, so a `}}` in them does not end it.
fn with_line_marks(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut line = 1;
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let before = &rest[..open];
        line += before.matches('\n').count();
        out.push_str(before);
        out.push_str(&format!("{{{{{LINE_MARK} {line}}}}}"));
        let action = &rest[open..];
        let end = action_end(action).unwrap_or(action.len());
        line += action[..end].matches('\n').count();
        out.push_str(&action[..end]);
        rest = &action[end..];
    }
    out.push_str(rest);
    out
}

/// The first `{{end}}` or `{{else}}` outside any block, with its line.
fn stray_block_word(text: &str) -> Option<(usize, &'static str)> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        line += rest[..open].matches('\n').count();
        let action = &rest[open..];
        let end = action_end(action).unwrap_or(action.len());
        let inner = action[2..end.saturating_sub(2).max(2)].trim_start_matches('-');
        let inner = inner.trim_start();
        let word: String = inner
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        match word.as_str() {
            "if" | "range" | "with" | "define" | "block" => depth += 1,
            "end" if depth == 0 => return Some((line, "end")),
            "end" => depth -= 1,
            "else" if depth == 0 => return Some((line, "else")),
            _ => {}
        }
        line += action[..end].matches('\n').count();
        rest = &action[end..];
    }
    None
}

/// The byte length of the action at the start of `s` (which starts `{{`).
fn action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 2;
    while i < b.len() {
        match b[i] {
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i + 2),
            b'"' | b'\'' => {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(pairs: &[(&str, &str)]) -> Store {
        Store::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn r(text: &str, s: &Store) -> Result<String, RenderError> {
        render("t", text, s, &Value::Nil)
    }

    #[test]
    fn confd_store_functions() {
        let s = store(&[
            ("/services/web/c1", "10.0.0.1:80"),
            ("/services/web/c2", "10.0.0.2:80"),
            ("/services/api/x/deep", "1"),
            ("/services/api/c3", "10.0.0.3:8080"),
            ("/top", "t"),
        ]);
        assert_eq!(
            r(r#"{{range lsdir "/services"}}{{.}} {{end}}"#, &s).unwrap(),
            "api web "
        );
        assert_eq!(
            r(r#"{{range ls "/services/api"}}{{.}} {{end}}"#, &s).unwrap(),
            "c3 x "
        );
        assert_eq!(
            r(r#"{{range lsdir "/services/api"}}{{.}} {{end}}"#, &s).unwrap(),
            "x "
        );
        assert_eq!(
            r(
                r#"{{range gets "/services/web/*"}}{{base .Key}}={{.Value}};{{end}}"#,
                &s
            )
            .unwrap(),
            "c1=10.0.0.1:80;c2=10.0.0.2:80;"
        );
        assert_eq!(
            r(r#"{{join (getvs "/services/*/c*") ","}}"#, &s).unwrap(),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:8080"
        );
        assert_eq!(
            r(r#"{{getv "/top"}} {{getv "/none" "dflt"}} {{exists "/top"}} {{(get "/top").Value}}"#, &s).unwrap(),
            "t dflt true t"
        );
        assert_eq!(
            r(r#"{{$p := split (getv "/services/web/c1") ":"}}{{index $p 1}} {{toUpper "a"}} {{replace "a.b.c" "." "-" -1}} {{dir "/a/b/c"}} {{atoi "42" | add 1}}"#, &s).unwrap(),
            "80 A a-b-c /a/b 43"
        );
        assert_eq!(
            r(r#"{{range sortByLength (split "ccc,a,bb" ",")}}{{.}}{{end}} {{range reverse (split "a,b" ",")}}{{.}}{{end}} {{(json "{\"a\":1}").a}} {{index (map "k" "v") "k"}}"#, &s).unwrap(),
            "abbccc ba 1 v"
        );
    }

    #[test]
    fn a_missing_key_names_its_line() {
        let s = store(&[("/a", "1")]);
        let e = r(
            "global\n  {{getv \"/a\"}}\n\n  x {{- getv \"/nope\" -}}\n",
            &s,
        )
        .unwrap_err();
        assert_eq!(e.line, Some(4), "{e:?}");
        assert!(e.message.contains("key does not exist: /nope"), "{e:?}");
        let e = r("a\n{{if}}\n", &s).unwrap_err();
        assert_eq!(e.line, Some(2), "{e:?}");
        let e = r(
            "a\n{{range $x := ls \"/\"}}\n{{\"}}\" | no_such}}{{end}}",
            &s,
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3), "{e:?}");
    }

    #[test]
    fn an_end_outside_a_block_is_refused() {
        let s = store(&[]);
        let e = r("a\n{{if 1}}c{{end}}\n{{- end}}b", &s).unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (Some(3), "unexpected {{end}}")
        );
        let e = r("a{{else}}b", &s).unwrap_err();
        assert_eq!(e.message, "unexpected {{else}}");
        assert_eq!(r("{{/* {{end}} */}}{{`{{end}}`}}", &s).unwrap(), "{{end}}");
        assert_eq!(r("{{with 1}}{{else with 2}}{{end}}x", &s).unwrap(), "x");
    }

    #[test]
    fn marks_skip_strings_and_comments() {
        let marked = with_line_marks("a{{/* }} */}}\n{{\"}}\"}}{{`x\n}}`}}\n{{.}}");
        assert_eq!(
            marked,
            "a{{devstack_confd_line 1}}{{/* }} */}}\n{{devstack_confd_line 2}}{{\"}}\"}}{{devstack_confd_line 2}}{{`x\n}}`}}\n{{devstack_confd_line 4}}{{.}}"
        );
    }

    #[test]
    fn store_takes_the_prefix_off() {
        let kvs: BTreeMap<String, String> = [
            ("/prod/services/a/1".to_string(), "x".to_string()),
            ("/other/b".to_string(), "y".to_string()),
        ]
        .into();
        let s = Store::from_registry(&kvs, "/prod", &["/prod/services".to_string()]);
        assert_eq!(s.get("/services/a/1").map(String::as_str), Some("x"));
        assert_eq!(s.kvs.len(), 1);
    }

    /// spec validates templates with `spec::confd::FUNCTIONS`: the same set.
    #[test]
    fn the_function_list_is_the_registered_one() {
        let s = store(&[]);
        for name in crate::spec::confd::FUNCTIONS {
            // Called without arguments: at most an argument error, never
            // an undefined function.
            let called = render("t", &format!("{{{{{name}}}}}"), &s, &Value::Nil);
            if let Err(e) = called {
                assert!(!e.message.contains("undefined function"), "{name}: {e:?}");
            }
        }
        let known: std::collections::BTreeSet<&str> =
            crate::spec::confd::FUNCTIONS.iter().copied().collect();
        let source = include_str!("gotemplate.rs");
        for part in source.split(".func(\"").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                known.contains(name),
                "{name} is registered but not in spec::confd::FUNCTIONS"
            );
        }
    }

    #[test]
    fn file_exists_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("present");
        std::fs::write(&file, "x").unwrap();
        let text = format!(
            "{{{{fileExists \"{}\"}}}} {{{{fileExists \"{}\"}}}}",
            file.display(),
            dir.path().join("absent").display()
        );
        assert_eq!(r(&text, &store(&[])).unwrap(), "true false");
    }

    /// `lookupSRV` asks a real DNS server: one on loopback here, answering
    /// SRV records for one name and NXDOMAIN for any other.
    #[test]
    fn lookup_srv_asks_the_resolver_and_sorts_as_confd() {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
        use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
        use hickory_resolver::proto::rr::{rdata::SRV, Name, RData, Record};
        use hickory_resolver::proto::xfer::Protocol;
        use std::sync::atomic::AtomicBool;

        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let serving = stop.clone();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !serving.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let query = Message::from_vec(&buf[..n]).unwrap();
                let mut answer = Message::new();
                answer
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_recursion_desired(query.recursion_desired())
                    .set_recursion_available(true)
                    .add_queries(query.queries().to_vec());
                let asked = query.queries()[0].name().clone();
                if asked.to_ascii() == "_http._tcp.example.test." {
                    for (priority, weight, port, target) in [
                        (10, 5, 80, "b.example.test."),
                        (20, 0, 9, "a.example.test."),
                        (20, 0, 10, "a.example.test."),
                    ] {
                        let target = Name::from_ascii(target).unwrap();
                        answer.add_answer(Record::from_rdata(
                            asked.clone(),
                            60,
                            RData::SRV(SRV::new(priority, weight, port, target)),
                        ));
                    }
                } else {
                    answer.set_response_code(ResponseCode::NXDomain);
                }
                socket.send_to(&answer.to_vec().unwrap(), from).unwrap();
            }
        });
        let mut config = ResolverConfig::new();
        config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
        let found = srv_records(
            srv_query_name("http", "tcp", "example.test."),
            config.clone(),
            ResolverOpts::default(),
        );
        let missing = srv_records(
            srv_query_name("", "", "_http._tcp.nothing.test."),
            config,
            ResolverOpts::default(),
        );
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();

        // confd sorts the text "target port priority weight": port 10
        // before port 9 on the same target.
        let found = found.unwrap();
        let dot = Value::from(found.iter().map(Srv::value).collect::<Vec<_>>());
        let shown = render(
            "t",
            "{{range .}}{{.Target}}:{{.Port}}/{{.Priority}}/{{.Weight}} {{end}}",
            &store(&[]),
            &dot,
        )
        .unwrap();
        assert_eq!(
            shown,
            "a.example.test.:10/20/0 a.example.test.:9/20/0 b.example.test.:80/10/5 "
        );
        let missing = missing.unwrap_err();
        assert!(missing.contains("_http._tcp.nothing.test."), "{missing}");
    }

    #[test]
    fn go_path_match() {
        assert!(path_match("/a/*", "/a/b").unwrap());
        assert!(!path_match("/a/*", "/a/b/c").unwrap());
        assert!(path_match("/a/[b-d]?", "/a/cx").unwrap());
        assert!(!path_match("/a/[^b]", "/a/b").unwrap());
        assert!(path_match("/a/\\*", "/a/*").unwrap());
        assert!(path_match("/a/[", "/a/b").is_err());
    }
}
