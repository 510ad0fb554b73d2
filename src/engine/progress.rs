//! What `up` reports while it works: one event per step, rendered by the CLI
//! as progress bars (TTY), plain lines, or JSON (`--json`).

use serde::Serialize;
use tokio::sync::mpsc;

/// One step of bringing a stack up or down.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    /// A build began.
    BuildStarted { service: String, tag: String },
    /// A line of build output.
    BuildOutput { service: String, line: String },
    /// A build finished.
    Built {
        service: String,
        image_id: String,
        millis: u64,
    },
    /// A build was not needed: the image under its tag was built from the
    /// same inputs (context, Dockerfile, arguments).
    BuildCurrent { service: String, image_id: String },
    /// A pull's progress (per layer when `layer` is set).
    Pull {
        service: String,
        image: String,
        layer: Option<String>,
        status: String,
    },
    /// How devstack reaches the stack's containers (health probes, the
    /// proxy's control channel, a swap's checks): `decided` when the stack's
    /// probe on its proxy settled it, else the presumption it starts from.
    /// `registry`: where the stack's registry runs, once its routing path
    /// decided (left out of the JSON until then).
    Reach {
        reach: super::reach::Reach,
        decided: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        registry: Option<super::reach::Registry>,
    },
    /// The stack's network or a volume was created.
    Created { object: String, name: String },
    /// A unit waits for these dependencies to be healthy.
    Waiting { service: String, on: Vec<String> },
    /// A task that must run before a unit started or finished.
    Task {
        task: String,
        before: String,
        state: String,
        exit_code: Option<i64>,
    },
    /// Something was done to a container: `creating`, `recreating`, `starting`,
    /// `removing`, `up to date`, with the reason when there is one.
    Container {
        service: String,
        container: String,
        action: String,
        reason: Option<String>,
    },
    /// A readiness probe saw something new.
    Probe {
        service: String,
        container: String,
        detail: String,
    },
    /// A container passed its readiness check.
    Ready {
        service: String,
        container: String,
        millis: u64,
    },
    /// Every container of a unit is ready.
    Healthy { service: String, millis: u64 },
    /// A unit failed (its report follows in the outcome).
    Failed { service: String, reason: String },
    /// A unit was not started because a dependency failed.
    Blocked { service: String, by: String },
    /// A container was stopped or removed by `down` or Ctrl-C.
    Stopped { container: String, removed: bool },
}

/// Where progress goes. Cloning is cheap; a closed receiver is ignored, so
/// the engine never fails because nobody is listening.
#[derive(Debug, Clone)]
pub struct Reporter(Option<mpsc::UnboundedSender<Progress>>);

impl Reporter {
    /// A reporter and the receiving end to render from.
    pub fn channel() -> (Reporter, mpsc::UnboundedReceiver<Progress>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Reporter(Some(tx)), rx)
    }

    /// A reporter that drops everything (tests, library callers).
    pub fn silent() -> Reporter {
        Reporter(None)
    }

    pub fn send(&self, event: Progress) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}
