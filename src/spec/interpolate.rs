//! `${VAR}` interpolation, as Compose does it: `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}`,
//! and `$$` for a literal `$`. Defaults may themselves hold variables.
//!
//! The stack file is input like any other: nesting is bounded (a default
//! nested tens of thousands deep would otherwise overflow the stack), and so
//! is the length of what a value expands to (`$A$A$A...` with a long `A`).

/// Deepest nesting of `${...}` inside defaults; real stacks use two or three.
pub const MAX_DEPTH: usize = 32;
/// Longest text one value may expand to.
pub const MAX_LEN: usize = 1 << 20;

/// The prefix of the names that refer to a datastore's facts (`${datastores.pg.url}`).
pub const DATASTORES: &str = "datastores.";

/// Why a value could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A malformed `${...}` or a required variable that is not set.
    #[error("{0}")]
    Invalid(String),
    #[error("the value expands to more than {} KiB", .max_len.div_ceil(1024))]
    TooLong { max_len: usize },
    #[error("variables are nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Invalid(message)
    }
}

/// Replaces variables in `text`, reading them through `lookup`.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Error> {
    interpolate_within(text, lookup, MAX_LEN)
}

/// Like [`interpolate`], with at most `max_len` bytes of output.
pub fn interpolate_within(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    max_len: usize,
) -> Result<String, Error> {
    expand_text(text, lookup, 0, max_len)
}

fn expand_text(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
    max_len: usize,
) -> Result<String, Error> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    if depth > MAX_DEPTH {
        return Err(Error::TooDeep);
    }
    let mut out = String::with_capacity(text.len().min(max_len));
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = matching_brace(after).ok_or_else(|| {
                format!(
                    "`${{{}` is missing its closing `}}`",
                    after.chars().take(20).collect::<String>()
                )
            })?;
            out.push_str(&expand(&after[..end], lookup, depth, max_len)?);
            rest = &after[end + 1..];
        } else {
            let len = name_len(rest);
            if len == 0 {
                // A lone `$` (as in a price) stays as written.
                out.push('$');
            } else {
                out.push_str(&lookup(&rest[..len]).unwrap_or_default());
                rest = &rest[len..];
            }
        }
        if out.len() > max_len {
            return Err(Error::TooLong { max_len });
        }
    }
    out.push_str(rest);
    if out.len() > max_len {
        return Err(Error::TooLong { max_len });
    }
    Ok(out)
}

fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map(|(i, _)| i)
        .unwrap_or(s.len())
}

/// The index of the `}` that closes a `${`, allowing nested `${...}` in defaults.
fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn expand(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
    max_len: usize,
) -> Result<String, Error> {
    // `${datastores.NAME.url}`: a dotted name, resolved after decoding (see `refs.rs`).
    let len = match inner.strip_prefix(DATASTORES) {
        Some(rest) => {
            DATASTORES.len()
                + rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
                    .unwrap_or(rest.len())
        }
        None => name_len(inner),
    };
    if len == 0 {
        return Err(format!("`${{{inner}}}` does not start with a variable name").into());
    }
    let name = &inner[..len];
    let op = &inner[len..];
    let value = lookup(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (operator, arg) = if op.is_empty() {
        return Ok(value.unwrap_or_default());
    } else if let Some(arg) = op.strip_prefix(":-") {
        (":-", arg)
    } else if let Some(arg) = op.strip_prefix(":?") {
        (":?", arg)
    } else if let Some(arg) = op.strip_prefix(":+") {
        (":+", arg)
    } else if let Some(arg) = op.strip_prefix('-') {
        ("-", arg)
    } else if let Some(arg) = op.strip_prefix('?') {
        ("?", arg)
    } else if let Some(arg) = op.strip_prefix('+') {
        ("+", arg)
    } else {
        return Err(
            format!("`${{{inner}}}`: unknown operator `{op}` (use :-, -, :?, ?, :+ or +)").into(),
        );
    };
    match operator {
        ":-" if set_nonempty => Ok(value.unwrap_or_default()),
        "-" if value.is_some() => Ok(value.unwrap_or_default()),
        ":-" | "-" => expand_text(arg, lookup, depth + 1, max_len),
        ":?" if set_nonempty => Ok(value.unwrap_or_default()),
        "?" if value.is_some() => Ok(value.unwrap_or_default()),
        ":?" | "?" => {
            let message = expand_text(arg, lookup, depth + 1, max_len)?;
            Err(Error::Invalid(if message.is_empty() {
                format!("required variable `{name}` is not set")
            } else {
                format!("required variable `{name}` is not set: {message}")
            }))
        }
        ":+" if set_nonempty => expand_text(arg, lookup, depth + 1, max_len),
        "+" if value.is_some() => expand_text(arg, lookup, depth + 1, max_len),
        _ => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, &str>) {
        let lookup = |name: &str| match name {
            "SET" => Some("value".to_string()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8080".to_string()),
            _ => None,
        };
        let got = interpolate(text, &lookup).map_err(|e| e.to_string());
        match expected {
            Ok(want) => assert_eq!(got.as_deref(), Ok(want), "{text}"),
            Err(fragment) => {
                let err = got.expect_err(text);
                assert!(err.contains(fragment), "{text}: {err}");
            }
        }
    }

    #[test]
    fn forms() {
        check("plain", Ok("plain"));
        check("$SET", Ok("value"));
        check("${SET}", Ok("value"));
        check("a-${SET}-b", Ok("a-value-b"));
        check("${UNSET}", Ok(""));
        check("${UNSET:-fallback}", Ok("fallback"));
        check("${EMPTY:-fallback}", Ok("fallback"));
        check("${EMPTY-fallback}", Ok(""));
        check("${UNSET-fallback}", Ok("fallback"));
        check("${UNSET:-${PORT}}", Ok("8080"));
        check("${SET:+alt}", Ok("alt"));
        check("${UNSET:+alt}", Ok(""));
        check("$$SET", Ok("$SET"));
        check("costs 5$", Ok("costs 5$"));
        check("${SET:?must be set}", Ok("value"));
        check(
            "${UNSET:?must be set}",
            Err("required variable `UNSET` is not set: must be set"),
        );
        check("${EMPTY:?}", Err("required variable `EMPTY` is not set"));
        check("${UNSET", Err("missing its closing"));
        check("${}", Err("does not start with a variable name"));
        check("${SET/x}", Err("unknown operator"));
    }

    /// Regression (issue 10): `${A:-${A:-...}}` nested tens of thousands deep
    /// overflowed the stack. Run on a thread with a bounded stack (2 MiB, a
    /// main thread's is 8) so an unbounded recursion fails this test
    /// instead of passing by luck.
    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let depth = 50_000;
        let text = format!("{}x{}", "${A:-".repeat(depth), "}".repeat(depth));
        let got = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || interpolate(&text, &|_| None))
            .unwrap()
            .join()
            .expect("the interpolation thread did not overflow its stack");
        assert_eq!(got, Err(Error::TooDeep));
        assert!(Error::TooDeep
            .to_string()
            .contains("nested more than 32 levels"));
        // Nesting up to the limit still works.
        let text = format!("{}x{}", "${A:-".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        check(&text, Ok("x"));
    }

    /// A short value cannot expand into gigabytes through a long variable.
    #[test]
    fn expansion_length_is_bounded() {
        let long = "y".repeat(64 * 1024);
        let lookup = |name: &str| (name == "LONG").then(|| long.clone());
        let text = "$LONG".repeat(100_000);
        let err = interpolate(&text, &lookup).unwrap_err().to_string();
        assert!(err.contains("expands to more than 1024 KiB"), "{err}");
        assert_eq!(interpolate("$LONG", &lookup).unwrap().len(), 64 * 1024);
        let err = interpolate_within("${LONG}${LONG}", &lookup, 100_000).unwrap_err();
        assert_eq!(err, Error::TooLong { max_len: 100_000 });
    }
}
