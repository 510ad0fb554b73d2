//! A confd configuration directory (`proxy.confd`), read as confd reads it:
//! `conf.d/*.toml` template resources, each naming a template under
//! `templates/`. Pure apart from reading those files: `spec` validates the
//! directory with it at load, and the router reads it again at every apply,
//! so an edit of a resource or a template takes effect at the next change.

use std::path::{Path, PathBuf};

use super::model::ProxyKind;

/// confd's template functions, by name: what a template may call besides
/// Go's own (`router::gotemplate` registers exactly these; a test there
/// holds the two lists together).
pub const FUNCTIONS: &[&str] = &[
    "exists",
    "get",
    "gets",
    "getv",
    "getvs",
    "ls",
    "lsdir",
    "base",
    "dir",
    "split",
    "join",
    "toUpper",
    "toLower",
    "contains",
    "replace",
    "trimSuffix",
    "json",
    "jsonArray",
    "getenv",
    "atoi",
    "parseBool",
    "datetime",
    "lookupIP",
    "lookupIPV4",
    "lookupIPV6",
    "lookupSRV",
    "fileExists",
    "map",
    "reverse",
    "sortByLength",
    "sortKVByLength",
    "seq",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "base64Encode",
    "base64Decode",
];

/// Go template syntax problems of a template, as `file:line: message`
/// (its functions are confd's; nothing is executed).
pub fn check_template(path: &Path, text: &str) -> Option<String> {
    let mut template = gotmpl::Template::new("check");
    for name in FUNCTIONS {
        template = template.func(name, |_| Ok(gotmpl::Value::Nil));
    }
    match template.parse(text) {
        Ok(_) => None,
        Err(
            gotmpl::TemplateError::Parse { line, message, .. }
            | gotmpl::TemplateError::Lex { line, message, .. },
        ) => Some(format!("{}:{line}: {message}", path.display())),
        Err(e) => Some(format!("{}: {e}", path.display())),
    }
}

/// One `[template]` resource of `conf.d/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The resource file (`<dir>/conf.d/NAME.toml`).
    pub file: PathBuf,
    /// The template (`<dir>/templates/<src>`).
    pub src: PathBuf,
    /// Where production installs the rendered file.
    pub dest: String,
    /// Keys (under `prefix`) the template reads.
    pub keys: Vec<String>,
    /// Prepended to every key, and stripped from what the template sees.
    pub prefix: String,
    /// The file's mode (`"0644"`), when given.
    pub mode: Option<u32>,
    /// Checks the staged file; `{{.src}}` is its path.
    pub check_cmd: Option<String>,
    /// What production runs after installing (devstack stands in for it).
    pub reload_cmd: Option<String>,
}

impl Resource {
    /// The resource file's name (`haproxy.toml`), for messages.
    pub fn name(&self) -> String {
        self.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Whether this resource is the configuration a proxy of `kind` serves:
    /// for HAProxy a `.cfg` file with `haproxy` in its path, for nginx its
    /// main file, `nginx.conf` (other files it includes are resources of
    /// their own, installed at their `dest`).
    pub fn is_proxy_config(&self, kind: ProxyKind) -> bool {
        match kind {
            ProxyKind::Haproxy => self.dest.ends_with(".cfg") && self.dest.contains("haproxy"),
            ProxyKind::Nginx => self.dest.rsplit('/').next() == Some("nginx.conf"),
        }
    }

    /// The proxy kind whose configuration this resource renders, if any.
    fn renders_for(&self) -> Option<ProxyKind> {
        [ProxyKind::Haproxy, ProxyKind::Nginx]
            .into_iter()
            .find(|k| self.is_proxy_config(*k))
    }

    /// The etcd keys this resource reads: each of `keys` under `prefix`.
    pub fn full_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| join_key(&self.prefix, k))
            .collect()
    }
}

/// `prefix` + `key` as confd joins them (`path.Join`), always absolute.
pub fn join_key(prefix: &str, key: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in prefix.split('/').chain(key.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Reads every `conf.d/*.toml` of `dir`, in name order. Every problem found
/// is returned, each naming its file and line.
/// `kind` is the stack's `proxy.kind`: exactly one resource must render
/// that proxy's configuration, and none another kind's.
pub fn read(dir: &Path, kind: ProxyKind) -> Result<Vec<Resource>, Vec<String>> {
    let confd = dir.join("conf.d");
    let entries = match std::fs::read_dir(&confd) {
        Ok(e) => e,
        Err(e) => return Err(vec![format!("cannot read {}: {e}", confd.display())]),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(vec![format!(
            "{} holds no template resource (`*.toml`)",
            confd.display()
        )]);
    }
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => match parse(dir, &file, &text) {
                Ok(r) => resources.push(r),
                Err(mut p) => problems.append(&mut p),
            },
            Err(e) => problems.push(format!("cannot read {}: {e}", file.display())),
        }
    }
    for r in &resources {
        match r.renders_for() {
            Some(other) if other != kind => problems.push(format!(
                "{} renders {} configuration (`dest = \"{}\"`), but `proxy.kind` is `{}`: set `proxy.kind: {}`, or point `dest` at the {} configuration ({})",
                r.file.display(),
                match other {
                    ProxyKind::Haproxy => "an HAProxy",
                    ProxyKind::Nginx => "an nginx",
                },
                r.dest,
                kind.as_str(),
                other.as_str(),
                kind.product(),
                proxy_config_rule(kind),
            )),
            _ => {}
        }
    }
    let proxies: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.is_proxy_config(kind))
        .collect();
    if problems.is_empty() && proxies.len() != 1 {
        problems.push(format!(
            "{} needs exactly one resource whose `dest` is the {} configuration ({}); found {}",
            confd.display(),
            kind.product(),
            proxy_config_rule(kind),
            if proxies.is_empty() {
                "none".to_string()
            } else {
                proxies
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
    if problems.is_empty() {
        Ok(resources)
    } else {
        Err(problems)
    }
}

/// How a resource's `dest` names the configuration of a proxy kind.
fn proxy_config_rule(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Haproxy => "a `.cfg` file with `haproxy` in its path",
        ProxyKind::Nginx => "a file named `nginx.conf`",
    }
}

/// The 1-based line where `key = ` is written, else 1.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// One resource file: confd's `[template]` table.
pub fn parse(dir: &Path, file: &Path, text: &str) -> Result<Resource, Vec<String>> {
    let at = |key: &str| format!("{}:{}", file.display(), line_of(text, key));
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            return Err(vec![format!(
                "{}:{line}: not a confd resource: {}",
                file.display(),
                e.message()
            )]);
        }
    };
    let Some(template) = table.get("template").and_then(|t| t.as_table()) else {
        return Err(vec![format!(
            "{}:1: a confd resource needs a `[template]` table",
            file.display()
        )]);
    };
    let mut problems = Vec::new();
    const KNOWN: &[&str] = &[
        "src",
        "dest",
        "keys",
        "prefix",
        "mode",
        "owner",
        "uid",
        "gid",
        "check_cmd",
        "reload_cmd",
    ];
    for key in template.keys() {
        if !KNOWN.contains(&key.as_str()) {
            problems.push(format!(
                "{}: `{key}` is not a confd resource setting (known: {})",
                at(key),
                KNOWN.join(", ")
            ));
        }
    }
    let string = |key: &str, problems: &mut Vec<String>| -> Option<String> {
        match template.get(key) {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                problems.push(format!("{}: `{key}` must be a string", at(key)));
                None
            }
        }
    };
    let src = string("src", &mut problems);
    let dest = string("dest", &mut problems);
    let prefix = string("prefix", &mut problems).unwrap_or_default();
    let check_cmd = string("check_cmd", &mut problems);
    let reload_cmd = string("reload_cmd", &mut problems);
    let mode = match string("mode", &mut problems) {
        None => None,
        Some(m) => match u32::from_str_radix(&m, 8) {
            Ok(v) if v <= 0o7777 => Some(v),
            _ => {
                problems.push(format!(
                    "{}: mode `{m}` is not an octal file mode such as \"0644\"",
                    at("mode")
                ));
                None
            }
        },
    };
    let keys = match template.get("keys") {
        Some(toml::Value::Array(items)) => {
            let keys: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if keys.len() != items.len() || keys.is_empty() {
                problems.push(format!(
                    "{}: `keys` must be a list of one or more key strings",
                    at("keys")
                ));
            }
            keys
        }
        Some(_) => {
            problems.push(format!(
                "{}: `keys` must be a list of key strings",
                at("keys")
            ));
            vec![]
        }
        None => {
            problems.push(format!(
                "{}:1: a confd resource needs `keys`",
                file.display()
            ));
            vec![]
        }
    };
    let src = match src {
        None => {
            problems.push(format!(
                "{}:1: a confd resource needs `src`",
                file.display()
            ));
            None
        }
        Some(s) => {
            let path = dir.join("templates").join(&s);
            if s.split('/').any(|p| p == "..") || Path::new(&s).is_absolute() {
                problems.push(format!(
                    "{}: `src` {s:?} must name a file under {}",
                    at("src"),
                    dir.join("templates").display()
                ));
                None
            } else {
                match std::fs::read_to_string(&path) {
                    Err(e) => {
                        problems.push(format!(
                            "{}: template {} does not exist or cannot be read: {e}",
                            at("src"),
                            path.display()
                        ));
                        None
                    }
                    Ok(text) => {
                        if let Some(problem) = check_template(&path, &text) {
                            problems.push(problem);
                        }
                        Some(path)
                    }
                }
            }
        }
    };
    if dest.is_none() && !template.contains_key("dest") {
        problems.push(format!(
            "{}:1: a confd resource needs `dest`",
            file.display()
        ));
    }
    match (src, dest, problems.is_empty()) {
        (Some(src), Some(dest), true) => Ok(Resource {
            file: file.to_path_buf(),
            src,
            dest,
            keys,
            prefix,
            mode,
            check_cmd,
            reload_cmd,
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(resource: &str, templates: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("conf.d/haproxy.toml"), resource).unwrap();
        for t in templates {
            std::fs::write(dir.path().join("templates").join(t), "x").unwrap();
        }
        dir
    }

    #[test]
    fn a_production_resource_reads() {
        let dir = dir_with(
            "[template]\nsrc = \"haproxy.cfg.tmpl\"\ndest = \"/etc/haproxy/haproxy.cfg\"\nkeys = [\"/services\"]\nmode = \"0644\"\ncheck_cmd = \"haproxy -c -f {{.src}}\"\nreload_cmd = \"systemctl reload haproxy\"\n",
            &["haproxy.cfg.tmpl"],
        );
        let r = read(dir.path(), ProxyKind::Haproxy).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].dest, "/etc/haproxy/haproxy.cfg");
        assert_eq!(r[0].full_keys(), vec!["/services".to_string()]);
        assert_eq!(r[0].mode, Some(0o644));
        assert!(r[0].is_proxy_config(ProxyKind::Haproxy));
        assert!(!r[0].is_proxy_config(ProxyKind::Nginx));
    }

    #[test]
    fn problems_name_the_file_and_line() {
        let dir = dir_with(
            "[template]\nsrc = \"missing.tmpl\"\ndest = \"/etc/haproxy/haproxy.cfg\"\nkeys = \"/services\"\nmode = \"rw\"\nwatch = true\n",
            &[],
        );
        let problems = read(dir.path(), ProxyKind::Haproxy).unwrap_err();
        let text = problems.join("\n");
        assert!(text.contains("haproxy.toml:2: template"), "{text}");
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.contains("haproxy.toml:4: `keys`"), "{text}");
        assert!(text.contains("haproxy.toml:5: mode"), "{text}");
        assert!(text.contains("haproxy.toml:6: `watch`"), "{text}");
        let dir = dir_with("[template\nsrc = 1\n", &[]);
        let problems = read(dir.path(), ProxyKind::Haproxy).unwrap_err();
        assert!(
            problems[0].contains("haproxy.toml:1: not a confd resource"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_resource_for_another_proxy_kind_is_named() {
        let dir = dir_with(
            "[template]\nsrc = \"haproxy.cfg.tmpl\"\ndest = \"/etc/haproxy/haproxy.cfg\"\nkeys = [\"/services\"]\n",
            &["haproxy.cfg.tmpl"],
        );
        let problems = read(dir.path(), ProxyKind::Nginx).unwrap_err();
        let text = problems.join("\n");
        assert!(
            text.contains("haproxy.toml renders an HAProxy configuration (`dest = \"/etc/haproxy/haproxy.cfg\"`), but `proxy.kind` is `nginx`"),
            "{text}"
        );
        assert!(text.contains("a file named `nginx.conf`"), "{text}");
        std::fs::write(
            dir.path().join("conf.d/haproxy.toml"),
            "[template]\nsrc = \"haproxy.cfg.tmpl\"\ndest = \"/etc/nginx/nginx.conf\"\nkeys = [\"/services\"]\n",
        )
        .unwrap();
        assert!(read(dir.path(), ProxyKind::Nginx).is_ok());
        let problems = read(dir.path(), ProxyKind::Haproxy).unwrap_err();
        assert!(
            problems[0].contains("renders an nginx configuration")
                && problems[0].contains("set `proxy.kind: nginx`"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_template_syntax_error_names_its_line() {
        let dir = dir_with(
            "[template]\nsrc = \"haproxy.cfg.tmpl\"\ndest = \"/etc/haproxy/haproxy.cfg\"\nkeys = [\"/services\"]\n",
            &[],
        );
        std::fs::write(
            dir.path().join("templates/haproxy.cfg.tmpl"),
            "global\n{{range lsdir \"/services\"}}\n{{ (base . }}\n{{end}}\n",
        )
        .unwrap();
        let problems = read(dir.path(), ProxyKind::Haproxy).unwrap_err();
        assert!(problems[0].contains("haproxy.cfg.tmpl:3:"), "{problems:?}");
        std::fs::write(
            dir.path().join("templates/haproxy.cfg.tmpl"),
            "{{range gets \"/services/*\"}}{{base .Key | toUpper}}{{end}}",
        )
        .unwrap();
        assert!(read(dir.path(), ProxyKind::Haproxy).is_ok());
    }

    #[test]
    fn keys_join_as_confd_joins_them() {
        assert_eq!(join_key("/", "/services"), "/services");
        assert_eq!(join_key("/production", "services/"), "/production/services");
        assert_eq!(join_key("", "/a//b"), "/a/b");
    }
}
