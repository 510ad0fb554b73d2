//! Which config changes the HAProxy runtime API can apply without a reload.
//!
//! The decision is made on the rendered text, not on the view, so it holds
//! for any template: two configs that differ only in `server` lines of the
//! same backend, by address, port or the `disabled` flag, are the same
//! configuration with servers moved, which `set server` commands reproduce
//! exactly. Anything else (a route, a new slot, a changed option) needs a
//! check and a reload.
//!
//! Commands go to the master CLI several to a line, separated by `;`, so
//! every word put in one (backend, server, address) must be a single plain
//! token: a line whose words are not (a user template rendering a raw
//! registry value, say) is left to the reload path, where `haproxy -c`
//! judges the whole config.
//!
//! It also reads HAProxy's tables (`show servers state`, `show stat`) for
//! the controllers that ask the proxy where it sends traffic: [`ProxyRuntime`]
//! is that question as a trait, [`MasterCli`] asks a running HAProxy,
//! `engine::nginx::NginxControl` a running nginx, `engine::api::ProxyControl`
//! is either (what the engine finds), and the tests' fake engine answers
//! from its own state.

use std::future::Future;
use std::net::SocketAddr;

use super::proxy::master_cli;

/// A proxy's account of where it sends traffic, read from its runtime API.
pub trait ProxyRuntime: Clone + Send + Sync + 'static {
    /// Every server slot (`show servers state`); `None` when the proxy does
    /// not answer with a table.
    fn servers(&self) -> impl Future<Output = Option<Vec<ServerState>>> + Send;
    /// Requests in flight per (backend, server) (`show stat`); `None` when
    /// the proxy does not answer.
    fn sessions(&self) -> impl Future<Output = Option<Vec<(String, String, u64)>>> + Send;
}

/// A running HAProxy, asked through its master CLI (commands go to the
/// current worker with `@1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterCli {
    pub addr: SocketAddr,
}

impl MasterCli {
    /// The proxy at `addr`, if it answers `show servers state` now.
    pub async fn answering(addr: SocketAddr) -> Option<MasterCli> {
        let cli = MasterCli { addr };
        cli.servers().await.map(|_| cli)
    }
}

impl ProxyRuntime for MasterCli {
    async fn servers(&self) -> Option<Vec<ServerState>> {
        let text = master_cli(self.addr, "@1 show servers state").await.ok()?;
        servers_answer(&text)
    }

    async fn sessions(&self) -> Option<Vec<(String, String, u64)>> {
        let text = master_cli(self.addr, "@1 show stat").await.ok()?;
        Some(parse_stat_sessions(&text))
    }
}

/// The servers of a `show servers state` answer; an answer with no table
/// (no worker yet, an error message) is `None`, while a table without
/// servers starts with its version line `1`.
pub fn servers_answer(text: &str) -> Option<Vec<ServerState>> {
    let servers = parse_servers_state(text);
    (!servers.is_empty() || text.trim_start().starts_with('1')).then_some(servers)
}

/// One server line: `server <name> <addr>:<port> <options...>`.
#[derive(Debug, PartialEq, Eq)]
struct ServerLine<'a> {
    name: &'a str,
    address: &'a str,
    port: u16,
    /// The options without `disabled`, to compare the rest of the line.
    options: Vec<&'a str>,
    disabled: bool,
    checked: bool,
}

fn server_line(line: &str) -> Option<ServerLine<'_>> {
    let mut words = line.split_whitespace();
    if words.next()? != "server" {
        return None;
    }
    let name = words.next()?;
    let (address, port) = words.next()?.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let mut options = Vec::new();
    let mut disabled = false;
    let mut checked = false;
    for w in words {
        match w {
            "disabled" => disabled = true,
            "check" => {
                checked = true;
                options.push(w);
            }
            _ => options.push(w),
        }
    }
    Some(ServerLine {
        name,
        address: address.trim_start_matches('[').trim_end_matches(']'),
        port,
        options,
        disabled,
        checked,
    })
}

/// The runtime API commands that turn the `live` config into `next`, or
/// `None` when a reload is needed. An empty list means the configs are equal.
///
/// Servers going away are put in maintenance first (no new request reaches
/// them; requests in flight finish), then moved to their placeholder address;
/// servers coming in get their address first and are made ready last, marked
/// up so HAProxy sends the next request at once (the registrar only
/// registers containers that passed their health check).
pub fn runtime_commands(live: &str, next: &str) -> Option<Vec<String>> {
    let a: Vec<&str> = live.lines().collect();
    let b: Vec<&str> = next.lines().collect();
    if a.len() != b.len() {
        return None;
    }
    let mut commands = Vec::new();
    let mut backend: Option<&str> = None;
    for (old, new) in a.iter().zip(&b) {
        // Section headers are equal on both sides, or the loop has returned.
        let trimmed = old.trim_start();
        if !old.starts_with(' ') && !old.starts_with('\t') && !trimmed.is_empty() {
            let mut words = trimmed.split_whitespace();
            backend = match (words.next(), words.next()) {
                (Some("backend"), Some(name)) => Some(name),
                _ => None,
            };
        }
        if old == new {
            continue;
        }
        let (o, n) = (server_line(old)?, server_line(new)?);
        let backend = backend?;
        if o.name != n.name || o.options != n.options {
            return None;
        }
        if !(is_token(backend) && is_token(n.name) && is_address(n.address)) {
            return None;
        }
        let server = format!("{backend}/{}", n.name);
        let moved = o.address != n.address || o.port != n.port;
        // `set server ... addr` takes an IP only (HAProxy answers a name,
        // `host.docker.internal` say, with "Invalid addr"): a server moving
        // to a name is a reload, which resolves it.
        if moved && n.address.parse::<std::net::IpAddr>().is_err() {
            return None;
        }
        let set_addr = format!("set server {server} addr {} port {}", n.address, n.port);
        match (o.disabled, n.disabled) {
            (false, true) => {
                commands.push(format!("set server {server} state maint"));
                if moved {
                    commands.push(set_addr);
                }
            }
            (_, false) => {
                if moved && !o.disabled {
                    // Taken out first, so no request reaches the old address
                    // under the new one's name.
                    commands.push(format!("set server {server} state maint"));
                }
                if moved {
                    commands.push(set_addr);
                }
                if n.checked {
                    commands.push(format!("set server {server} health up"));
                }
                commands.push(format!("set server {server} state ready"));
            }
            (true, true) => {
                if moved {
                    commands.push(set_addr);
                }
            }
        }
    }
    Some(commands)
}

/// Whether a master CLI answer to runtime commands reports a failure. HAProxy
/// answers successful `set server` commands with nothing or an informational
/// sentence ("no need to change the addr", "... changed from ...").
pub fn runtime_failure(answer: &str) -> Option<String> {
    const FAILURES: [&str; 7] = [
        "No such",
        "Unknown command",
        "Require ",
        "Invalid",
        "Can't",
        "Permission denied",
        "not found",
    ];
    answer
        .lines()
        .map(str::trim)
        .find(|l| FAILURES.iter().any(|f| l.contains(f)))
        .map(str::to_string)
}

/// One server of HAProxy's `show servers state`: where it sends traffic and
/// whether it takes requests now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub backend: String,
    pub server: String,
    pub address: String,
    pub port: u16,
    /// 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op_state: u8,
    /// Maintenance and drain flags; 0 when the server takes new requests.
    pub admin_state: u32,
}

impl ServerState {
    /// Whether HAProxy sends new requests to it: running, and neither in
    /// maintenance (forced 0x01, inherited 0x02, resolution 0x20, state file
    /// 0x40) nor draining (0x08, 0x10). The configured-maintenance bit (0x04)
    /// of a `disabled` server stays set after `set server ... state ready`
    /// while the server takes requests, so it says nothing by itself.
    pub fn serving(&self) -> bool {
        const NOT_SERVING: u32 = 0x01 | 0x02 | 0x08 | 0x10 | 0x20 | 0x40;
        self.op_state == 2 && self.admin_state & NOT_SERVING == 0
    }
}

/// Parses `show servers state` (format version 1): a version line, a `#`
/// header naming the columns, one line per server. Columns are found by
/// their header names, so versions that add columns parse the same.
pub fn parse_servers_state(text: &str) -> Vec<ServerState> {
    rows(text, |l| l.split_whitespace().collect())
        .iter()
        .filter(|r| r.cells.len() >= r.columns.len())
        .filter_map(|r| {
            Some(ServerState {
                backend: r.get("be_name")?.to_string(),
                server: r.get("srv_name")?.to_string(),
                address: r.get("srv_addr")?.to_string(),
                port: r.get("srv_port")?.parse().ok()?,
                op_state: r.get("srv_op_state")?.parse().ok()?,
                admin_state: r.get("srv_admin_state")?.parse().ok()?,
            })
        })
        .collect()
}

/// Requests in flight per server, from `show stat` (CSV: `# pxname,svname,
/// qcur,qmax,scur,...`): (backend, server, current sessions). Frontend and
/// backend summary rows are left out.
pub fn parse_stat_sessions(text: &str) -> Vec<(String, String, u64)> {
    rows(text, |l| l.split(',').collect())
        .iter()
        .filter_map(|r| {
            let (px, sv, scur) = (r.get("pxname")?, r.get("svname")?, r.get("scur")?);
            if sv == "FRONTEND" || sv == "BACKEND" {
                return None;
            }
            Some((px.to_string(), sv.to_string(), scur.parse().ok()?))
        })
        .collect()
}

/// One row of a table the runtime API prints: a `#` line names the columns,
/// each later line holds one row's cells.
struct Row<'a> {
    columns: Vec<&'a str>,
    cells: Vec<&'a str>,
}

impl<'a> Row<'a> {
    /// The cell under the column named `name`.
    fn get(&self, name: &str) -> Option<&'a str> {
        let i = self.columns.iter().position(|c| *c == name)?;
        self.cells.get(i).copied()
    }
}

/// The rows of such a table, header and rows split into cells by `split`.
fn rows<'a>(text: &'a str, split: impl Fn(&'a str) -> Vec<&'a str>) -> Vec<Row<'a>> {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines().map(str::trim) {
        match line.strip_prefix('#') {
            Some(header) => columns = split(header.trim()),
            None => rows.push(Row {
                columns: columns.clone(),
                cells: split(line),
            }),
        }
    }
    rows
}

/// An IP address, or a DNS name (letters, digits, `-` and `_` in labels of at
/// most 63, at most 253 in all, no label starting or ending with `-`).
pub fn is_address(text: &str) -> bool {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// One word that means nothing special to HAProxy's configuration parser nor
/// to its command line interface: printable ASCII without spaces, quotes,
/// backslashes, `#` (a comment), `;` (a command separator), `$` (an
/// environment variable) or braces (anonymous ACLs).
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && !"\"'\\#;${}`".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "global\n    master-worker\n\nbackend svc_api\n    balance roundrobin\n    server s1 172.18.0.2:8080 check inter 1s\n    server s2 127.0.0.1:8080 check inter 1s disabled\n\nbackend svc_web\n    server s1 127.0.0.1:80 check inter 1s disabled\n";

    fn check(next: &str, expected: Option<&[&str]>) {
        let got = runtime_commands(LIVE, next);
        let expected = expected.map(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(got, expected, "next:\n{next}");
    }

    #[test]
    fn equal_configs_need_nothing() {
        check(LIVE, Some(&[]));
    }

    #[test]
    fn an_instance_coming_fills_its_slot() {
        check(
            &LIVE.replace(
                "server s2 127.0.0.1:8080 check inter 1s disabled",
                "server s2 172.18.0.3:8080 check inter 1s",
            ),
            Some(&[
                "set server svc_api/s2 addr 172.18.0.3 port 8080",
                "set server svc_api/s2 health up",
                "set server svc_api/s2 state ready",
            ]),
        );
    }

    #[test]
    fn an_instance_going_is_taken_out_before_it_moves() {
        check(
            &LIVE.replace(
                "server s1 172.18.0.2:8080 check inter 1s",
                "server s1 127.0.0.1:8080 check inter 1s disabled",
            ),
            Some(&[
                "set server svc_api/s1 state maint",
                "set server svc_api/s1 addr 127.0.0.1 port 8080",
            ]),
        );
    }

    #[test]
    fn a_slot_changing_hands_goes_through_maintenance() {
        check(
            &LIVE.replace("server s1 172.18.0.2:8080", "server s1 172.18.0.9:8080"),
            Some(&[
                "set server svc_api/s1 state maint",
                "set server svc_api/s1 addr 172.18.0.9 port 8080",
                "set server svc_api/s1 health up",
                "set server svc_api/s1 state ready",
            ]),
        );
    }

    #[test]
    fn a_server_moving_to_a_name_needs_a_reload() {
        let live = "backend devstack_etcd\n    mode tcp\n    server etcd 172.18.0.1:2379\n";
        assert_eq!(
            runtime_commands(
                live,
                &live.replace("172.18.0.1:2379", "host.docker.internal:40001")
            ),
            None
        );
        assert_eq!(
            runtime_commands(live, &live.replace("172.18.0.1:2379", "172.17.0.1:40001")),
            Some(vec![
                "set server devstack_etcd/etcd state maint".to_string(),
                "set server devstack_etcd/etcd addr 172.17.0.1 port 40001".to_string(),
                "set server devstack_etcd/etcd state ready".to_string(),
            ])
        );
    }

    #[test]
    fn the_right_backend_is_named() {
        check(
            &LIVE.replace(
                "server s1 127.0.0.1:80 check inter 1s disabled",
                "server s1 172.18.0.5:80 check inter 1s",
            ),
            Some(&[
                "set server svc_web/s1 addr 172.18.0.5 port 80",
                "set server svc_web/s1 health up",
                "set server svc_web/s1 state ready",
            ]),
        );
    }

    #[test]
    fn anything_else_needs_a_reload() {
        // Another option on a server line.
        check(
            &LIVE.replace(
                "check inter 1s disabled\n\nbackend svc_web",
                "check inter 2s disabled\n\nbackend svc_web",
            ),
            None,
        );
        // A new slot (more lines).
        check(
            &LIVE.replace(
                "    server s2 127.0.0.1:8080 check inter 1s disabled\n",
                "    server s2 127.0.0.1:8080 check inter 1s disabled\n    server s3 127.0.0.1:8080 check inter 1s disabled\n",
            ),
            None,
        );
        // A non-server line.
        check(
            &LIVE.replace("balance roundrobin", "balance leastconn"),
            None,
        );
        // A server renamed.
        check(&LIVE.replace("server s2 ", "server t2 "), None);
    }

    #[test]
    fn words_that_are_not_plain_tokens_need_a_reload() {
        // A `;` in an address would end `set server` and start another
        // command on the master CLI: never sent, the reload path decides.
        for address in ["172.18.0.3;@master", "172.18.0.3#x", "a'b", "${X}"] {
            check(
                &LIVE.replace(
                    "server s2 127.0.0.1:8080 check inter 1s disabled",
                    &format!("server s2 {address}:8080 check inter 1s"),
                ),
                None,
            );
        }
        let live = LIVE.replace("backend svc_api", "backend svc;api");
        let next = live.replace("server s1 172.18.0.2:8080", "server s1 172.18.0.9:8080");
        assert_eq!(runtime_commands(&live, &next), None);
        // The same change in a plain backend is a runtime change.
        let next = LIVE.replace("server s1 172.18.0.2:8080", "server s1 172.18.0.9:8080");
        assert!(runtime_commands(LIVE, &next).is_some());
    }

    #[test]
    fn failures_are_recognised() {
        assert_eq!(runtime_failure("\n\n"), None);
        assert_eq!(
            runtime_failure("no need to change the addr, port changed from '8404' to '80' by 'stats socket command'\n"),
            None
        );
        assert!(runtime_failure("No such server.\n").is_some());
    }
    #[test]
    fn servers_state_is_read_by_column_name() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 svc_web 1 s1 172.18.0.3 2 0 1 1 5 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n3 svc_web 2 s2 127.0.0.1 0 1 1 1 5 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n3 svc_web 3 s3 172.18.0.4 2 4 1 1 5 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n3 svc_web 4 s4 127.0.0.1 0 5 1 1 5 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n\n";
        let servers = parse_servers_state(text);
        assert_eq!(servers.len(), 4);
        // A `disabled` slot made ready at runtime keeps bit 0x04 and serves.
        assert!(servers[2].serving());
        assert!(!servers[3].serving());
        assert_eq!(servers[0].backend, "svc_web");
        assert_eq!(servers[0].address, "172.18.0.3");
        assert_eq!(servers[0].port, 8080);
        assert!(servers[0].serving());
        assert_eq!(servers[1].server, "s2");
        assert!(!servers[1].serving());
        // An answer that is not a state table (an error) parses as nothing.
        assert!(parse_servers_state("Unknown command.\n").is_empty());
    }

    #[test]
    fn a_servers_answer_without_a_table_is_no_answer() {
        // No worker yet, or an error: the proxy did not answer.
        assert_eq!(servers_answer("Unknown command.\n"), None);
        assert_eq!(servers_answer(""), None);
        // A table without servers is an answer: nothing is served.
        assert_eq!(
            servers_answer("1\n# be_id be_name srv_id srv_name\n"),
            Some(Vec::new())
        );
    }

    #[test]
    fn sessions_per_server_come_from_show_stat() {
        let text = "# pxname,svname,qcur,qmax,scur,smax,slim\nmain,FRONTEND,,,3,9,2000\nsvc_web,s1,0,0,2,5,\nsvc_web,s2,0,0,0,1,\nsvc_web,BACKEND,0,0,2,5,200\n\n";
        assert_eq!(
            parse_stat_sessions(text),
            vec![
                ("svc_web".to_string(), "s1".to_string(), 2),
                ("svc_web".to_string(), "s2".to_string(), 0)
            ]
        );
    }
}
