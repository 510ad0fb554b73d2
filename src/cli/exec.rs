//! `devstack exec SERVICE [--replica N] -- CMD...`: a command in a running
//! container, on this terminal (a TTY when stdin is one), exit code passed through.

use std::io::IsTerminal;

use super::args::{ExecArgs, GlobalArgs};
use super::stack::project_of;
use super::{exit, Failed};
use crate::engine::exec::Attach;
use crate::plan::ObservedState;
use crate::ui::{connect, engine_failure};

pub async fn run(global: &GlobalArgs, args: ExecArgs) -> anyhow::Result<u8> {
    let (project, loaded) = project_of(global)?;
    if let Some(l) = &loaded {
        if l.stack.unit(&args.service).is_none() {
            let hint =
                crate::plan::graph::suggest(&args.service, l.stack.units().map(|(n, _, _)| n));
            return Err(Failed::new(
                exit::USAGE,
                format!(
                    "`{}` is not a service or datastore of this stack{hint}",
                    args.service
                ),
            )
            .into());
        }
    }
    let engine = connect().await?;
    let observed = engine
        .list_project(&project)
        .await
        .map_err(engine_failure)?;
    let container = crate::plan::replica_container(&observed, &args.service, args.replica);
    let Some(container) = container else {
        return Err(Failed::new(
            exit::FAILURE,
            format!(
                "`{}` has no replica {} in {project} (is the stack up? `devstack ps` lists what runs)",
                args.service, args.replica
            ),
        )
        .into());
    };
    if container.state != ObservedState::Running {
        return Err(Failed::new(
            exit::FAILURE,
            format!(
                "`{}` is not running ({:?})",
                container.name, container.state
            )
            .to_lowercase(),
        )
        .into());
    }
    let attach = terminal_attach();
    let _raw = if attach.tty { RawMode::enable() } else { None };
    let code = engine
        .exec_attached(&container.id, &args.command, attach)
        .await
        .map_err(engine_failure)?;
    Ok(exit_code(code))
}

/// A TTY when both ends are terminals; stdin forwarded when it is a terminal
/// or a pipe/file (not when it is closed).
pub(crate) fn terminal_attach() -> Attach {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    Attach {
        tty,
        stdin: true,
        size: if tty { terminal_size() } else { None },
    }
}

/// A container's exit code as ours: 0..=255 as is, anything else as failure.
pub(crate) fn exit_code(code: i64) -> u8 {
    u8::try_from(code).unwrap_or(exit::FAILURE)
}

fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ only writes into the winsize we pass.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            Some((ws.ws_col, ws.ws_row))
        } else {
            None
        }
    }
}

/// The terminal in raw mode while an interactive command runs (keys go to the
/// container as typed, Ctrl-C included); restored on drop, even on error.
pub(crate) struct RawMode(libc::termios);

impl RawMode {
    pub(crate) fn enable() -> Option<RawMode> {
        // SAFETY: tcgetattr/tcsetattr on stdin with termios structs we own.
        unsafe {
            let mut original: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut original) != 0 {
                return None;
            }
            let mut raw = original;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode(original))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enable`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}
