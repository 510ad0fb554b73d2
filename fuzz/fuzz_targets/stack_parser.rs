//! Fuzzes the whole stack loader: any bytes give a stack or a report, never a panic.
#![no_main]

use devstack::spec::{load, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(report) = load(&LoadOptions::inline("fuzz.yaml", text)) {
            let _ = report.render(false);
        }
    }
});
