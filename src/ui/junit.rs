//! A JUnit XML report, the format CI systems display: one suite, one case
//! per check (a service reaching health, the test command).

use std::fmt::Write;

/// One test case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The group it belongs to (`health`, `command`).
    pub class: String,
    pub name: String,
    pub seconds: f64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Why, in a line, and what to look at (a log tail, the output's end).
    Failed {
        message: String,
        detail: String,
    },
    /// Never run (the stack did not come up), and why.
    Skipped {
        message: String,
    },
}

/// The report of suite `name` holding `cases`.
pub fn render(name: &str, cases: &[Case]) -> String {
    let failures = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed { .. }))
        .count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped { .. }))
        .count();
    let seconds: f64 = cases.iter().map(|c| c.seconds).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"devstack test\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{seconds:.3}\">",
        cases.len()
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{seconds:.3}\">",
        escape(name),
        cases.len()
    );
    for case in cases {
        let _ = write!(
            xml,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            escape(&case.class),
            escape(&case.name),
            case.seconds
        );
        match &case.outcome {
            Outcome::Passed => xml.push_str("/>\n"),
            Outcome::Failed { message, detail } => {
                let _ = writeln!(
                    xml,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    escape(message),
                    escape(detail)
                );
            }
            Outcome::Skipped { message } => {
                let _ = writeln!(
                    xml,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    escape(message)
                );
            }
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// Text as XML character data or an attribute value: markup escaped, and
/// characters XML 1.0 cannot hold at all (most control characters, from
/// a program's raw output) replaced.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters_in_output_are_escaped() {
        let xml = render(
            "shop-test-1",
            &[Case {
                class: "command".into(),
                name: "sh -c \"exit 3\"".into(),
                seconds: 1.5,
                outcome: Outcome::Failed {
                    message: "exited with 3".into(),
                    detail: "<b>&\u{1b}[31m".into(),
                },
            }],
        );
        assert!(xml.contains("name=\"sh -c &quot;exit 3&quot;\""), "{xml}");
        assert!(
            xml.contains(">&lt;b&gt;&amp;\u{fffd}[31m</failure>"),
            "{xml}"
        );
        assert!(
            xml.contains("tests=\"1\" failures=\"1\" skipped=\"0\""),
            "{xml}"
        );
    }
}
