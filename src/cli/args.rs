//! What a user can type: the clap definitions of every subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::names::ProjectName;

pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    failure: an invalid stack file, or a command that could not do what was asked
  2    usage error in the command line (a bad flag, a project name that is not a name)
  3    no Docker engine answered
  4    a service (or a task it waits for) did not become healthy: `up` (`--wait`
       at its timeout), `scale`, `restart`
  5    an image could not be had: its build failed or its pull was refused
  6    the stack has routes and its routing path could not start, or a route was
       not served through the proxy before the timeout
  69   the subcommand is not available in this build yet
  130  interrupted (Ctrl-C)
  `exec` and `run` exit with the container's own exit code.";

/// devstack turns a team's production service definitions into a local stack
/// that behaves like production: real Docker, etcd discovery and HAProxy routing.
#[derive(Debug, Parser)]
#[command(name = "devstack", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Stack file; repeat to merge overlays in order (later wins). Default: devstack.yaml
    #[arg(short = 'f', long = "file", value_name = "FILE", global = true)]
    pub files: Vec<PathBuf>,
    /// Name of this copy of the stack (default: the stack's `name`), so copies run side by side;
    /// lowercase letters, digits, `-` and `_`
    #[arg(
        short = 'p',
        long,
        env = "DEVSTACK_PROJECT_NAME",
        value_name = "NAME",
        global = true
    )]
    pub project_name: Option<ProjectName>,
    /// Never colour the output (the NO_COLOR environment variable does the same)
    #[arg(long, global = true)]
    pub no_color: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the stack files and report every problem with file:line:column
    Validate(ValidateArgs),
    /// Print the effective stack: files merged, variables interpolated, defaults applied
    Config(ConfigArgs),
    /// Build, start and wait for the stack (all services, or those named)
    ///
    /// "Up" means healthy and, when the stack has routes, routed: `up` waits
    /// until every route answers through the proxy before it shows the route's
    /// URL or returns. A routing path that cannot start (the proxy exits, its
    /// port is taken) is exit 6 with the proxy's own last output, before any
    /// service starts; a stack without routes then runs without routing.
    Up(UpArgs),
    /// Stop and remove the stack's containers and network
    Down(DownArgs),
    /// List the stack's containers and their state
    Ps(PsArgs),
    /// Show the logs of the stack's containers
    Logs(LogsArgs),
    /// Run a command in a running container of a service
    Exec(ExecArgs),
    /// Run a one-off task container and pass its exit code through
    Run(RunArgs),
    /// Restart the containers of services
    Restart(RestartArgs),
    /// Change the number of replicas of services (SERVICE=N)
    Scale(ScaleArgs),
    /// Watch sources, rebuild and swap containers blue-green on change
    ///
    /// Each save of a service's build context rebuilds its image (or syncs the
    /// files, or restarts it, as its `watch.action` says) and swaps the running
    /// containers one replica at a time: the new one serves through the proxy
    /// before the old one stops. A save during a build restarts the build. An
    /// edit of the stack file applies too: changed services are swapped, new
    /// units started, removed ones stopped. A foreground `devstack up` does the
    /// same. Runs until Ctrl-C.
    Watch(WatchArgs),
    /// Test against a throwaway copy of the stack: up, run CMD, artifacts, down
    ///
    /// The copy runs as `<stack>-test-<random>` (or `-p`) with a free proxy
    /// port, so it never touches a running copy. It is brought up as `up
    /// --wait` does; CMD runs on the host with DEVSTACK_PROXY_URL and
    /// DEVSTACK_URL_<SERVICE> set and its output streamed (without CMD, the
    /// stack's `test: true` task runs in a container on the copy's network);
    /// the artifacts (each container's log, `ps --json`, routes, the proxy's
    /// config, the stack as `config` shows it, the command's output,
    /// junit.xml; secrets masked as `config` masks them) are written; then
    /// the copy is taken down with its volumes, also on Ctrl-C, SIGTERM and
    /// `--timeout`, and by a reaper of its own if `test` is killed outright.
    /// Exits with CMD's code (124 on timeout, 130 when interrupted,
    /// devstack's codes when the copy did not come up).
    Test(TestArgs),
    /// List every devstack project on the engine: running, stopped or abandoned
    ///
    /// Abandoned: a `devstack test` copy whose process is gone (killed
    /// before it could take the copy down). AGENT says whether the project's
    /// routing agent runs.
    Ls(ListArgs),
    /// Remove abandoned projects: containers, network, routing state (and volumes when asked)
    ///
    /// Only abandoned projects (see `ls`) are touched; a `devstack test`
    /// copy's volumes always go, other volumes only with `--volumes`.
    Prune(PruneArgs),
    /// The embedded etcd server, and quick looks at a stack's registry
    Etcd(EtcdArgs),
    /// Show the routes the proxy serves and the instances behind them
    Routes(RoutesArgs),
    /// Snapshots of the datastores' data: snapshot, restore, ls, rm
    Data(DataArgs),
    /// Write the devstack stack file equivalent to Compose files or Kubernetes manifests
    ///
    /// Each FILE is a Compose file, a Kubernetes manifest (or a directory of
    /// them) or a devstack overlay, merged in order. Values devstack inferred
    /// carry a comment; what could not be carried over is listed at the top
    /// and on stderr with file, line and field path. `-f` reads the same
    /// files directly; `import` is for keeping the translation.
    Import(ImportArgs),
    /// Write the stack out for a cluster engine: a Compose file for `docker stack deploy`, or Kubernetes manifests
    ///
    /// What the target cannot say (tasks in Compose, start order and seed data
    /// in Kubernetes, the discovery and proxy settings in both) is listed on
    /// stderr with its field path. Both read back through `import` (or `-f`)
    /// into the same stack, less what is listed.
    Export(ExportArgs),
    /// Run a detached stack's etcd, registrar, proxy and router (started by `up`)
    #[command(hide = true)]
    Agent,
    /// Show what devstack finds about the engine and which reach paths work
    ///
    /// Prints the engine's endpoint, version, OS and architecture, whether it
    /// is Docker Desktop or rootless, its storage and cgroup drivers, the clock
    /// skew between this host and the engine, the free disk where it keeps its
    /// data (when that is on this host), and which reach paths between devstack
    /// and containers work: each is probed for real with a throwaway container
    /// on a throwaway network (labelled `dev.devstack.doctor`, removed
    /// afterwards) from an image the engine already has; nothing is pulled.
    /// Exits 0 when everything devstack needs works, 1 when something it needs
    /// does not (or could not be probed), 3 when no engine answers.
    Doctor(DoctorArgs),
    /// Watch a `devstack test` and take its copy down if it dies first (started by `test`)
    #[command(hide = true)]
    Reap(ReapArgs),
    /// Relay stdin to a TCP address and its answers to stdout (run in a container by devstack)
    #[command(hide = true)]
    Relay {
        /// The address to connect to, `HOST:PORT`
        addr: String,
    },
    /// Print a shell completion script
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Compose files, Kubernetes manifests or directories of them, devstack overlays
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to write the stack file (`-` for stdout)
    #[arg(
        short = 'o',
        long,
        value_name = "FILE",
        default_value = "devstack.yaml"
    )]
    pub output: PathBuf,
    /// Replace the output file if it exists
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub target: ExportTarget,
}

#[derive(Debug, Subcommand)]
pub enum ExportTarget {
    /// A Compose file that `docker stack deploy` accepts (routes as `devstack.route` labels)
    Compose {
        /// Where to write it (default: stdout)
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists
        #[arg(long)]
        force: bool,
        /// Reach services without the swarm's routing mesh: each task's ports
        /// published on its own node (`mode: host`) and service names resolving
        /// to every task (`endpoint_mode: dnsrr`); for swarms whose kernel has
        /// no IPVS, which the mesh's ports and virtual IPs need
        #[arg(long)]
        no_routing_mesh: bool,
    },
    /// Kubernetes manifests: Deployments, StatefulSets, Services, Ingresses, ConfigMaps, PVCs
    K8s {
        /// Where to write them: a file (documents separated by `---`), or a
        /// directory (an existing one, or a path ending in `/`) for one file per unit
        #[arg(short = 'o', long, value_name = "FILE|DIR")]
        output: Option<PathBuf>,
        /// The namespace of every object (default: the project name)
        #[arg(short = 'n', long, value_name = "NAME")]
        namespace: Option<String>,
        /// Replace output files that exist
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Print the problems as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print JSON instead of YAML
    #[arg(long)]
    pub json: bool,
    /// Show values that came from env files instead of masking them
    #[arg(long)]
    pub show_secrets: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Only these services (and what they depend on)
    pub services: Vec<String>,
    /// Return once every service is healthy instead of streaming logs
    #[arg(short, long)]
    pub detach: bool,
    /// Return 0 once healthy and routed, or non-zero with a report of what is not
    #[arg(long)]
    pub wait: bool,
    /// How long `up` waits for health and routes
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub timeout: String,
    /// Print machine-readable events and the final state as JSON
    #[arg(long)]
    pub json: bool,
    /// Fill datastores that have no data volume yet from this snapshot (a
    /// branch: `-p copy up --from-snapshot NAME` beside the original)
    #[arg(long, value_name = "NAME")]
    pub from_snapshot: Option<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also remove the stack's data: its named volumes and its containers' anonymous volumes
    #[arg(short, long)]
    pub volumes: bool,
    /// Grace period between SIGTERM and kill (default: each service's `stop_grace`)
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Probe every running container now, rather than show the health the
    /// stack's routing agent last saw
    #[arg(long)]
    pub probe: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Services to show (default: all)
    pub services: Vec<String>,
    /// Keep streaming new lines (no `-f`: that names the stack file)
    #[arg(long)]
    pub follow: bool,
    /// Only lines newer than this (a duration such as 10m, or a timestamp)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only the last N lines of each container
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The service whose container runs the command
    pub service: String,
    /// Which replica (1-based)
    #[arg(long, default_value_t = 1)]
    pub replica: u32,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task to run
    pub task: String,
    /// Replace the task's command
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Services to restart (default: all)
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// SERVICE=N pairs
    #[arg(required = true, value_name = "SERVICE=N")]
    pub assignments: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Services to watch (default: every service with a build)
    pub services: Vec<String>,
    /// Print one JSON event per rebuild (service, trigger, build_ms, swap_ms,
    /// result, and superseded when newer saves restarted the build)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks the whole tree (clashing short flags, say) only when asked.
    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

// ---------------------------------------------------------------------------
// `devstack etcd`

#[derive(Debug, Args)]
pub struct EtcdArgs {
    #[command(subcommand)]
    pub command: EtcdCommand,
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// Run the embedded etcd v3 server in the foreground
    Serve(ServeArgs),
    /// Show a key, or every key under a prefix
    Get(GetArgs),
    /// Set a key
    Put(PutArgs),
    /// Delete a key, or every key under a prefix
    Del(DelArgs),
    /// Print changes to a key or prefix as they happen
    Watch(EtcdWatchArgs),
    /// List the keys under a prefix (default: every key)
    Ls(LsArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (gRPC, /health and /version share it)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2379")]
    pub listen: SocketAddr,
    /// Directory the store persists to
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".devstack/etcd",
        conflicts_with = "in_memory"
    )]
    pub data_dir: PathBuf,
    /// Keep the store in memory only; nothing survives a restart
    #[arg(long)]
    pub in_memory: bool,
    /// Member name reported by `etcdctl member list`
    #[arg(long, default_value = "devstack")]
    pub name: String,
    /// Client URLs to report instead of the listening address (comma-separated)
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,
    /// Largest write request accepted, in bytes (etcd's --max-request-bytes)
    #[arg(long, value_name = "BYTES", default_value_t = crate::etcd::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Space quota in bytes; once exceeded, writes fail with etcd's NOSPACE
    /// alarm until it is disarmed after compacting (etcd's --quota-backend-bytes)
    #[arg(long, value_name = "BYTES", default_value_t = crate::etcd::DEFAULT_QUOTA_BACKEND_BYTES)]
    pub quota_backend_bytes: u64,
}

/// Where the quick looks connect.
#[derive(Debug, Clone, Args)]
pub struct Endpoints {
    /// etcd endpoints, comma-separated (default: the running stack's etcd,
    /// else its cluster's endpoints, else http://127.0.0.1:2379)
    #[arg(long, env = "DEVSTACK_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub key: String,
    /// Treat KEY as a prefix
    #[arg(long)]
    pub prefix: bool,
    /// Print JSON (key, value, revisions, lease) instead of key/value lines
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    pub key: String,
    pub value: String,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    pub key: String,
    /// Treat KEY as a prefix
    #[arg(long)]
    pub prefix: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

#[derive(Debug, Args)]
pub struct EtcdWatchArgs {
    pub key: String,
    /// Treat KEY as a prefix
    #[arg(long)]
    pub prefix: bool,
    /// Start from this revision (replays history)
    #[arg(long, value_name = "REV")]
    pub rev: Option<i64>,
    /// Print one JSON object per event
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Prefix to list under
    #[arg(default_value = "")]
    pub prefix: String,
    /// Print a JSON array of keys
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Only these services (and what they depend on)
    pub services: Vec<String>,
    /// The test command and its arguments, after `--`; run on the host with
    /// DEVSTACK_PROXY_URL, DEVSTACK_URL_<SERVICE> and DEVSTACK_PROJECT set.
    /// None: the stack's task marked `test: true`
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
    /// Where the logs, `ps`, routes, proxy config, command output and JUnit report go
    #[arg(long, value_name = "DIR", default_value = "devstack-artifacts")]
    pub artifacts: PathBuf,
    /// The whole run's limit: past it the command is stopped and the copy taken down (exit 124)
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// How long the copy may take to become healthy and routed
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub up_timeout: String,
}

#[derive(Debug, Args)]
pub struct ReapArgs {
    /// The `devstack test` watched: `PID:START` as on the copy's network
    #[arg(long, value_name = "PID:START")]
    pub owner: String,
    /// Where to note what was removed
    #[arg(long, value_name = "FILE")]
    pub log: PathBuf,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only projects at least this old (`2h`, `30m`)
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Also remove their named volumes (a `devstack test` copy's always go)
    #[arg(long)]
    pub volumes: bool,
    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Copy the datastores' volumes (all by default) while the stack runs
    Snapshot {
        /// The snapshot's name
        name: String,
        /// Datastores to include (default: every one with a data volume)
        datastores: Vec<String>,
    },
    /// Put the datastores' volumes back as the snapshot holds them, and restart what uses them
    Restore {
        /// The snapshot's name
        name: String,
        /// Datastores to restore (default: every one in the snapshot)
        datastores: Vec<String>,
        /// Restore a snapshot taken with another image reference
        #[arg(long)]
        force: bool,
    },
    /// List the project's snapshots
    Ls {
        /// One JSON object per snapshot part, in an array
        #[arg(long)]
        json: bool,
    },
    /// Write a snapshot to one zstd-compressed file, for `import` elsewhere
    Export {
        /// The snapshot's name
        name: String,
        /// The file to write
        file: std::path::PathBuf,
    },
    /// Read a file `export` wrote into a snapshot of this project
    Import {
        /// The file to read
        file: std::path::PathBuf,
    },
    /// Remove a snapshot
    Rm {
        /// The snapshot's name
        name: String,
    },
}
