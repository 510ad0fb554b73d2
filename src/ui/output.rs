//! How the command line prints: errors once at the top, colour only where
//! wanted, and never a panic on a closed stdout or stderr.
//!
//! `println!` and `eprintln!` panic when the write fails, and a write fails
//! with EPIPE once the reader of a pipe is gone (`devstack logs | head`, or
//! `devstack up 2>&1 | tee log` after Ctrl-C killed `tee` too). The macros
//! here print the same way and drop what cannot be written, so a closed
//! output never stops devstack halfway (above all, never before it stopped
//! the stack). SIGPIPE stays ignored, as Rust sets it.

use std::fmt;
use std::io::Write;

/// `print!` to stdout; a failed write is dropped.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::ui::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` to stdout; a failed write is dropped.
macro_rules! outln {
    () => {
        $crate::ui::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::ui::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` to stderr; a failed write is dropped.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::ui::output::write_stderr(format_args!($($arg)*))
    };
}

/// `eprintln!` to stderr; a failed write is dropped.
macro_rules! sayln {
    () => {
        $crate::ui::output::write_stderr(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::ui::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout, dropping what cannot be written (the reader is gone).
pub fn write_stdout(args: fmt::Arguments<'_>) {
    let _ = std::io::stdout().lock().write_fmt(args);
}

/// Writes to stderr, dropping what cannot be written (the reader is gone).
pub fn write_stderr(args: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Prints an error and its causes to stderr, once.
pub fn print_error(err: &anyhow::Error) {
    sayln!("error: {err}");
    for cause in err.chain().skip(1) {
        sayln!("  caused by: {cause}");
    }
}
