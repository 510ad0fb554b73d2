//! Env files (`env_file:` and the `.env` beside the stack file), read so that
//! no error ever quotes their text: a value may be a secret.

use std::path::Path;

/// Why an env file could not be read; the message names the file and, for a
/// malformed line, its number, never the line's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileError(pub String);

impl std::fmt::Display for EnvFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `KEY=value` pairs of an env file, in file order.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let bytes = std::fs::read(path).map_err(|err| {
        let why = match err.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => err.to_string(),
        };
        EnvFileError(format!("cannot read env file {}: {why}", path.display()))
    })?;
    parse(path, &bytes)
}

/// Parses env-file text (dotenvy's syntax: quotes, `export`, `${VAR}`).
fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<(String, String)>, EnvFileError> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Vec::new();
    for item in dotenvy::from_read_iter(text) {
        match item {
            Ok(pair) => out.push(pair),
            Err(dotenvy::Error::LineParse(line, _)) => {
                // dotenvy's own message quotes the whole line, value and all;
                // only its number is reported.
                let at = String::from_utf8_lossy(text)
                    .find(line.trim_end_matches(['\r', '\n']))
                    .map(|offset| {
                        format!(
                            ", line {}",
                            text[..offset].iter().filter(|b| **b == b'\n').count() + 1
                        )
                    })
                    .unwrap_or_default();
                return Err(EnvFileError(format!(
                    "env file {}{at} is not `KEY=value` (its text is not shown: it may hold a secret)",
                    path.display()
                )));
            }
            Err(dotenvy::Error::Io(err)) => {
                return Err(EnvFileError(format!(
                    "cannot read env file {}: {}",
                    path.display(),
                    if err.kind() == std::io::ErrorKind::InvalidData {
                        "it is not UTF-8 text".to_string()
                    } else {
                        err.to_string()
                    }
                )))
            }
            Err(other) => {
                return Err(EnvFileError(format!(
                    "cannot read env file {}: {other}",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&[(&str, &str)], &str>) {
        let got = parse(Path::new("/s/app.env"), text.as_bytes());
        match expected {
            Ok(pairs) => {
                let want: Vec<(String, String)> = pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                assert_eq!(got, Ok(want), "{text:?}");
            }
            Err(message) => assert_eq!(got, Err(EnvFileError(message.into())), "{text:?}"),
        }
    }

    #[test]
    fn pairs_in_order() {
        check(
            "\u{feff}# comment\nA=1\nexport B='two words'\n\nC=\"x\ny\"\n",
            Ok(&[("A", "1"), ("B", "two words"), ("C", "x\ny")]),
        );
    }

    /// Regression (issue 10): dotenvy's message quoted the malformed line,
    /// secret and all.
    #[test]
    fn a_malformed_line_is_named_by_number_not_quoted() {
        let secret = "hunter2-s3cr3t";
        let text = format!("A=1\nB=2\nPASSWORD {secret}\n");
        let err = parse(Path::new("/s/app.env"), text.as_bytes()).unwrap_err();
        assert_eq!(
            err.0,
            "env file /s/app.env, line 3 is not `KEY=value` (its text is not shown: it may hold a secret)"
        );
        assert!(!err.0.contains(secret));
        check(
            "GOOD=1\nTOKEN='unterminated s3cr3t\n",
            Err("env file /s/app.env, line 2 is not `KEY=value` (its text is not shown: it may hold a secret)"),
        );
    }
}
