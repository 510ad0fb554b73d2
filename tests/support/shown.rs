//! What a devstack run printed, shown when a test fails (cargo test
//! captures a passing test's output).

use std::process::Output;

/// Prints the command line, exit code, stdout and stderr of one run.
pub fn shown(project: &str, args: &[&str], out: &Output) {
    println!(
        "$ devstack -p {project} {}\nexit: {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
