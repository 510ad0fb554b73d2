//! This terminal lent to a command in a container (`exec`, `run`): a TTY
//! when both ends are one, raw mode while it runs, its exit code passed on.

use std::io::IsTerminal;

use super::exit;
use crate::engine::exec::Attach;

/// A TTY when both ends are terminals; stdin forwarded when it is a terminal
/// or a pipe/file (not when it is closed).
pub fn terminal_attach() -> Attach {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    Attach {
        tty,
        stdin: true,
        size: if tty { terminal_size() } else { None },
    }
}

/// A container's exit code as ours: 0..=255 as is, anything else as failure.
pub fn exit_code(code: i64) -> u8 {
    u8::try_from(code).unwrap_or(exit::FAILURE)
}

#[cfg(not(unix))]
fn terminal_size() -> Option<(u16, u16)> {
    let (rows, cols) = console::Term::stdout().size_checked()?;
    Some((cols, rows))
}

#[cfg(unix)]
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
#[cfg(unix)]
pub struct RawMode(libc::termios);

/// Elsewhere (Windows' console) the terminal stays as it is: lines go to
/// the container as typed, and Ctrl-C stops devstack's side.
#[cfg(not(unix))]
pub struct RawMode;

#[cfg(not(unix))]
impl RawMode {
    pub fn enable() -> Option<RawMode> {
        None
    }
}

#[cfg(unix)]
impl RawMode {
    pub fn enable() -> Option<RawMode> {
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

#[cfg(unix)]
impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enable`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}
