//! How the command line prints: errors once at the top, colour only where wanted.

/// Prints an error and its causes to stderr, once.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}
