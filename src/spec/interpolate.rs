//! `${VAR}` interpolation, as Compose does it: `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}`,
//! and `$$` for a literal `$`. Defaults may themselves hold variables.

/// Replaces variables in `text`, reading them through `lookup`.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
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
            out.push_str(&expand(&after[..end], lookup)?);
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
    }
    out.push_str(rest);
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

fn expand(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let len = name_len(inner);
    if len == 0 {
        return Err(format!(
            "`${{{inner}}}` does not start with a variable name"
        ));
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
        return Err(format!(
            "`${{{inner}}}`: unknown operator `{op}` (use :-, -, :?, ?, :+ or +)"
        ));
    };
    match operator {
        ":-" if set_nonempty => Ok(value.unwrap_or_default()),
        "-" if value.is_some() => Ok(value.unwrap_or_default()),
        ":-" | "-" => interpolate(arg, lookup),
        ":?" if set_nonempty => Ok(value.unwrap_or_default()),
        "?" if value.is_some() => Ok(value.unwrap_or_default()),
        ":?" | "?" => {
            let message = interpolate(arg, lookup)?;
            Err(if message.is_empty() {
                format!("required variable `{name}` is not set")
            } else {
                format!("required variable `{name}` is not set: {message}")
            })
        }
        ":+" if set_nonempty => interpolate(arg, lookup),
        "+" if value.is_some() => interpolate(arg, lookup),
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
        let got = interpolate(text, &lookup);
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
}
