//! nginx as the proxy container: its configuration checked with `nginx -t`
//! in the container, applied with `nginx -s reload`, and a read-only control
//! port that says which configuration the workers serving now run.
//!
//! nginx open source has no runtime API: every change is a reload. A reload
//! is graceful (the master starts workers on the new configuration; the old
//! ones stop accepting and finish their requests in flight), and when the
//! master cannot apply a configuration (a socket it cannot bind, say) it
//! keeps the old workers and logs why. So "reloaded" is judged by what the
//! workers answer, not by the signal being sent: devstack appends a `stream`
//! server on the control port ([`control_servers`]) that returns the
//! configuration's generation and its upstream servers as a table, for
//! connections from the stack network's gateway only. A connection there is
//! accepted by a worker of the configuration it answers from, so the table
//! is where traffic goes now (the swap's "is the new container routed", see
//! [`NginxControl`]). Nothing reaches the master through it: unlike HAProxy's
//! master CLI it can change nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::proxy::{CheckError, MASTER_CLI_PORT, NGINX_CONFIG_PATH as CONFIG_PATH};
use super::registry::EtcdTarget;
use super::runtime::{is_address, is_token, ProxyRuntime, ServerState};
use super::{Engine, EngineError};
/// Where a candidate is checked before it replaces the live one; in the same
/// directory, so relative `include`s resolve as they will.
const CANDIDATE_PATH: &str = "/etc/nginx/.devstack-candidate.conf";
/// The control port (the same number as HAProxy's, published the same way).
pub const CONTROL_PORT: u16 = MASTER_CLI_PORT;
/// The first word of the control port's answer.
const CONTROL_MAGIC: &str = "devstack-nginx";
/// How long one exec (`nginx -t`, `nginx -s reload`) may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one control-port exchange may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the image's nginx has its `stream` module, which devstack's
/// control port and etcd forward need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamModule {
    /// Compiled in (the official image: `--with-stream`).
    BuiltIn,
    /// A dynamic module to load first (Debian's and Alpine's packages:
    /// `--with-stream=dynamic`), at this path.
    Dynamic(String),
}

impl Engine {
    /// Checks `config` with the container's own `nginx -t`, as the file it
    /// would replace (same directory). `Ok(Err(_))` is a configuration nginx
    /// refused; `Err(_)` an engine failure.
    pub async fn nginx_check(
        &self,
        id: &str,
        config: &str,
    ) -> Result<Result<(), CheckError>, EngineError> {
        self.upload_file(id, CANDIDATE_PATH, config).await?;
        let out = self
            .exec_capture(
                id,
                &argv(&["nginx", "-t", "-c", CANDIDATE_PATH]),
                EXEC_TIMEOUT,
            )
            .await?;
        Ok(match out.exit_code {
            Some(0) => Ok(()),
            _ => Err(check_error(&out.output)),
        })
    }

    /// `nginx -s reload`: signals the master to load the installed file.
    /// `Ok(Err(_))` is nginx refusing to send it (its words); whether the
    /// master then applied the file is for the control port to say.
    pub async fn nginx_reload(&self, id: &str) -> Result<Result<(), String>, EngineError> {
        let out = self
            .exec_capture(
                id,
                &argv(&["nginx", "-s", "reload", "-c", CONFIG_PATH]),
                EXEC_TIMEOUT,
            )
            .await?;
        Ok(match out.exit_code {
            Some(0) => Ok(()),
            Some(code) => Err(format!(
                "`nginx -s reload` exited {code}: {}",
                out.output.trim()
            )),
            None => Err("`nginx -s reload` did not finish".into()),
        })
    }

    /// Where the container's nginx has its stream module (`nginx -V`), or
    /// why devstack cannot drive it.
    pub async fn nginx_stream_module(&self, id: &str) -> Result<StreamModule, EngineError> {
        let out = self
            .exec_capture(id, &argv(&["nginx", "-V"]), EXEC_TIMEOUT)
            .await?;
        stream_module(&out.output).ok_or_else(|| EngineError::Api {
            what: format!("using the nginx of `{id}` as the proxy"),
            message: "it was built without the stream module (`nginx -V` shows no `--with-stream`), which devstack's control port and etcd forward need".into(),
        })
    }
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// The stream module as `nginx -V` describes the build; `None` without one.
pub fn stream_module(version: &str) -> Option<StreamModule> {
    let words: Vec<&str> = version.split_whitespace().collect();
    if words.contains(&"--with-stream") {
        return Some(StreamModule::BuiltIn);
    }
    if words.contains(&"--with-stream=dynamic") {
        let dir = words
            .iter()
            .find_map(|w| w.strip_prefix("--modules-path="))
            .map(str::to_string)
            .or_else(|| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix("--prefix="))
                    .map(|p| format!("{}/modules", p.trim_end_matches('/')))
            })
            .unwrap_or_else(|| "/usr/lib/nginx/modules".into());
        return Some(StreamModule::Dynamic(format!(
            "{}/ngx_stream_module.so",
            dir.trim_end_matches('/')
        )));
    }
    None
}

/// nginx's complaint (`nginx: [emerg] ... in /etc/nginx/x.conf:12`): its
/// `[emerg]`/`[alert]`/`[crit]` lines and the first line number in the
/// checked file.
pub fn check_error(output: &str) -> CheckError {
    let complaints: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("[emerg]") || l.contains("[alert]") || l.contains("[crit]"))
        .collect();
    let line = complaints.iter().find_map(|l| {
        let after = l.rsplit_once(&format!("{CANDIDATE_PATH}:"))?.1;
        let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    });
    let message = if complaints.is_empty() {
        output.trim().to_string()
    } else {
        complaints
            .iter()
            .map(|l| {
                // Drop the `nginx: ` / timestamp and pid before the level.
                let l = l.trim();
                match l.find('[') {
                    Some(i) => &l[i..],
                    None => l,
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    CheckError {
        kind: crate::spec::ProxyKind::Nginx,
        line,
        message,
    }
}

/// One server of an `upstream` block as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    pub upstream: String,
    /// `s1`, `s2`, ... in the order of the block (nginx names none).
    pub name: String,
    pub address: String,
    pub port: u16,
    /// Marked `down` (or `backup`, which takes requests only when the
    /// others fail): not sent new requests.
    pub down: bool,
}

/// The servers of every `upstream` block of a configuration, read from its
/// text (so it holds for any template). Only servers whose upstream name is
/// a plain token and whose address is an IP address or DNS name with a port
/// are listed: they are what the control port reports.
pub fn upstream_servers(config: &str) -> Vec<UpstreamServer> {
    let mut out = Vec::new();
    let mut upstream: Option<String> = None;
    let mut depth = 0usize;
    let mut upstream_depth = 0usize;
    let mut count = 0usize;
    for raw in config.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        if let (Some(&"upstream"), Some(name)) = (words.first(), words.get(1)) {
            if line.ends_with('{') {
                upstream = Some(name.trim_end_matches('{').to_string());
                upstream_depth = depth + 1;
                count = 0;
            }
        } else if let (Some(&"server"), Some(addr), Some(up)) =
            (words.first(), words.get(1), upstream.as_ref())
        {
            if depth == upstream_depth {
                count += 1;
                let addr = addr.trim_end_matches(';');
                let params: Vec<&str> =
                    words[2..].iter().map(|w| w.trim_end_matches(';')).collect();
                if let Some((address, port)) = addr.rsplit_once(':') {
                    let address = address.trim_start_matches('[').trim_end_matches(']');
                    if let Ok(port) = port.parse::<u16>() {
                        if is_token(up) && is_address(address) {
                            out.push(UpstreamServer {
                                upstream: up.clone(),
                                name: format!("s{count}"),
                                address: address.to_string(),
                                port,
                                down: params.iter().any(|p| *p == "down" || *p == "backup"),
                            });
                        }
                    }
                }
            }
        }
        depth += line.matches('{').count();
        depth = depth.saturating_sub(line.matches('}').count());
        if upstream.is_some() && depth < upstream_depth {
            upstream = None;
        }
    }
    out
}

/// A short fingerprint of a configuration: the generation the control port
/// reports once workers run it.
pub fn generation(config: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(config.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// devstack's additions to a rendered nginx configuration: the stream module
/// loaded first when the image's nginx has it as a dynamic module (unless
/// the template loads it), and in a `stream` block (the template's own, or
/// one appended) the control port and, with an embedded etcd, the forward of
/// containers' `etcd:2379`. The control port answers, for the gateway only,
/// the generation of the template's rendering and its upstream servers.
pub fn with_devstack_sections(
    config: &str,
    etcd: Option<&EtcdTarget>,
    gateway: IpAddr,
    module: &StreamModule,
) -> String {
    let servers = control_servers(config, etcd, gateway);
    let mut out = String::new();
    if let StreamModule::Dynamic(path) = module {
        if !config.contains("ngx_stream_module") {
            out.push_str(&format!(
                "# Added by devstack: this nginx has its stream module as a dynamic one.\nload_module {path};\n"
            ));
        }
    }
    // nginx allows one `stream` block: devstack's servers go into the
    // template's when it has one.
    let mut inserted = false;
    for line in config.split_inclusive('\n') {
        out.push_str(line);
        if !inserted && is_stream_block_start(line) {
            if !line.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&servers);
            inserted = true;
        }
    }
    if !inserted {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("\n# Added by devstack.\nstream {\n");
        out.push_str(&servers);
        out.push_str("}\n");
    }
    out
}

/// `stream {` at the start of a line, outside any other block (as
/// templates write it).
fn is_stream_block_start(line: &str) -> bool {
    let words: Vec<&str> = line
        .split('#')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    !line.starts_with(' ')
        && !line.starts_with('\t')
        && (words == ["stream", "{"] || words == ["stream{"])
}

/// The `server` blocks devstack puts in the `stream` block.
fn control_servers(config: &str, etcd: Option<&EtcdTarget>, gateway: IpAddr) -> String {
    // Everything that makes the file differ: a changed forward is a new
    // generation too.
    let whole = format!("{config}\n{etcd:?}\n{gateway}");
    let mut table = format!("{CONTROL_MAGIC} {}\\n", generation(&whole));
    for s in upstream_servers(config) {
        table.push_str(&format!(
            "{} {} {} {} {}\\n",
            s.upstream,
            s.name,
            s.address,
            s.port,
            if s.down { "down" } else { "up" }
        ));
    }
    let mut text = format!(
        "    # Added by devstack: which configuration the workers run, for devstack\n    # only (it connects from the network's gateway, or through exec from\n    # this container's loopback; containers are refused).\n    server {{\n        listen {CONTROL_PORT};\n        allow {gateway};\n        allow 127.0.0.1;\n        deny all;\n        return \"{table}\";\n    }}\n"
    );
    if let Some(target) = etcd {
        text.push_str(&format!(
            "    # Added by devstack: containers reach etcd as etcd:2379 through here.\n    server {{\n        listen 2379;\n        proxy_pass {target};\n        proxy_timeout 1h;\n    }}\n"
        ));
    }
    text
}

/// The control port's answer: the generation and the server table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlAnswer {
    pub generation: String,
    pub servers: Vec<ServerState>,
}

/// Parses the control port's answer; `None` when it is not one.
pub fn parse_control(text: &str) -> Option<ControlAnswer> {
    let mut lines = text.lines();
    let generation = lines
        .next()?
        .strip_prefix(CONTROL_MAGIC)?
        .trim()
        .to_string();
    let servers = lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [backend, server, address, port, state] = f.as_slice() else {
                return None;
            };
            let up = *state == "up";
            Some(ServerState {
                backend: backend.to_string(),
                server: server.to_string(),
                address: address.to_string(),
                port: port.parse().ok()?,
                // Running and ready when up; in maintenance when down.
                op_state: if up { 2 } else { 0 },
                admin_state: if up { 0 } else { 0x01 },
            })
        })
        .collect();
    Some(ControlAnswer {
        generation,
        servers,
    })
}

/// One exchange with the control port: connect, read until nginx closes.
pub async fn read_control(addr: SocketAddr) -> std::io::Result<ControlAnswer> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok::<String, std::io::Error>(out)
    };
    let text = match tokio::time::timeout(CONTROL_TIMEOUT, exchange).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("nginx's control port at {addr} did not answer within {CONTROL_TIMEOUT:?}"),
            ))
        }
    };
    parse_control(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not devstack's control port at {addr}: {:?}",
                text.chars().take(80).collect::<String>()
            ),
        )
    })
}

/// A running nginx, asked through its control port: the servers are those
/// of the configuration its accepting workers run. nginx open source cannot
/// count a server's requests in flight, so [`ProxyRuntime::sessions`] has
/// no answer; a retired container's requests in flight are finished by the
/// old workers (a reload is graceful) and by its own graceful stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NginxControl {
    pub addr: SocketAddr,
}

impl NginxControl {
    /// The proxy at `addr`, if its control port answers now.
    pub async fn answering(addr: SocketAddr) -> Option<NginxControl> {
        read_control(addr).await.ok().map(|_| NginxControl { addr })
    }
}

impl ProxyRuntime for NginxControl {
    async fn servers(&self) -> Option<Vec<ServerState>> {
        read_control(self.addr).await.ok().map(|a| a.servers)
    }

    async fn sessions(&self) -> Option<Vec<(String, String, u64)>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "events {}\nhttp {\n    upstream svc_a {\n        server 172.18.0.2:8080 max_fails=1;\n        server 172.18.0.3:8080 down;\n    }\n    upstream svc_b { # one\n        server 172.18.0.4:80;\n    }\n    server {\n        listen 80;\n        server_name a;\n    }\n}\n";

    #[test]
    fn upstream_servers_are_read_from_the_text() {
        let servers = upstream_servers(CONFIG);
        let short: Vec<(String, String, String, u16, bool)> = servers
            .into_iter()
            .map(|s| (s.upstream, s.name, s.address, s.port, s.down))
            .collect();
        assert_eq!(
            short,
            vec![
                (
                    "svc_a".into(),
                    "s1".into(),
                    "172.18.0.2".into(),
                    8080,
                    false
                ),
                ("svc_a".into(), "s2".into(), "172.18.0.3".into(), 8080, true),
                ("svc_b".into(), "s1".into(), "172.18.0.4".into(), 80, false),
            ]
        );
        // A hostile address in a stack's own template is not reported.
        let hostile = "http {\nupstream x {\nserver 1.2.3.4\";evil:80;\n}\n}\n";
        assert!(upstream_servers(hostile).is_empty());
    }

    #[test]
    fn the_control_port_reports_the_generation_and_servers() {
        let gateway: IpAddr = "172.18.0.1".parse().unwrap();
        let text = with_devstack_sections(CONFIG, None, gateway, &StreamModule::BuiltIn);
        assert!(text.starts_with(CONFIG), "{text}");
        assert!(
            text.contains(
                "\n        allow 172.18.0.1;\n        allow 127.0.0.1;\n        deny all;\n"
            ),
            "{text}"
        );
        assert!(!text.contains("load_module"));
        assert!(!text.contains("2379"));
        // What nginx would return, its `\n` escapes read as new lines.
        let line = text.lines().find(|l| l.contains("return")).unwrap();
        let returned = line
            .trim()
            .trim_start_matches("return \"")
            .trim_end_matches("\";")
            .replace("\\n", "\n");
        let answer = parse_control(&returned).unwrap();
        assert_eq!(
            answer.generation,
            generation(&format!("{CONFIG}\nNone\n172.18.0.1"))
        );
        assert_eq!(answer.servers.len(), 3);
        assert!(answer.servers[0].serving());
        assert!(!answer.servers[1].serving());
        assert_eq!(answer.servers[2].backend, "svc_b");

        let etcd = EtcdTarget::Addr("172.18.0.1:40000".parse().unwrap());
        let module = StreamModule::Dynamic("/usr/lib/nginx/modules/ngx_stream_module.so".into());
        let text = with_devstack_sections(CONFIG, Some(&etcd), gateway, &module);
        assert!(text.starts_with(
            "# Added by devstack: this nginx has its stream module as a dynamic one.\nload_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
        ));
        assert!(text.contains("listen 2379;\n        proxy_pass 172.18.0.1:40000;"));
        // A template with its own stream block gets devstack's servers in it.
        let own =
            format!("{CONFIG}stream {{\n    server {{ listen 5432; proxy_pass db:5432; }}\n}}\n");
        let text = with_devstack_sections(&own, Some(&etcd), gateway, &StreamModule::BuiltIn);
        assert_eq!(text.matches("stream {").count(), 1, "{text}");
        assert!(text.contains("stream {\n    # Added by devstack"), "{text}");
    }

    #[test]
    fn nginx_v_says_where_the_stream_module_is() {
        assert_eq!(
            stream_module("nginx version: nginx/1.27.0\nconfigure arguments: --prefix=/etc/nginx --with-stream --with-stream_realip_module"),
            Some(StreamModule::BuiltIn)
        );
        assert_eq!(
            stream_module("configure arguments: --prefix=/usr/share/nginx --modules-path=/usr/lib/nginx/modules --with-stream=dynamic"),
            Some(StreamModule::Dynamic("/usr/lib/nginx/modules/ngx_stream_module.so".into()))
        );
        assert_eq!(
            stream_module("configure arguments: --with-http_ssl_module"),
            None
        );
    }

    #[test]
    fn check_errors_name_the_line() {
        let out = "nginx: [emerg] unknown directive \"bogus_keyword\" in /etc/nginx/.devstack-candidate.conf:12\nnginx: configuration file /etc/nginx/.devstack-candidate.conf test failed\n";
        let err = check_error(out);
        assert_eq!(err.line, Some(12));
        assert_eq!(
            err.message,
            "[emerg] unknown directive \"bogus_keyword\" in /etc/nginx/.devstack-candidate.conf:12"
        );
    }
}
