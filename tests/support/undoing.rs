//! What a test did to the host or the engine, undone also when it fails: a
//! guard whose `Drop` undoes, and a panic hook (installed once per test
//! binary) that undoes as soon as any thread panics. The test's `undo`
//! takes what it undoes from the test's own record, so whichever of the two
//! comes first does the work, and it never panics (it runs in the hook).

use std::sync::Once;

/// Undoes with `undo` when dropped; made by [`Undoing::arm`].
pub struct Undoing {
    label: &'static str,
    undo: fn() -> Vec<String>,
}

impl Undoing {
    /// The guard, with the panic hook in place. `label` names the test in
    /// the problems `undo` reports.
    pub fn arm(label: &'static str, undo: fn() -> Vec<String>) -> Undoing {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                previous(info);
                report(label, undo());
            }));
        });
        Undoing { label, undo }
    }
}

impl Drop for Undoing {
    fn drop(&mut self) {
        report(self.label, (self.undo)());
    }
}

fn report(label: &str, problems: Vec<String>) {
    for problem in problems {
        eprintln!("{label} clean-up: {problem}");
    }
}
