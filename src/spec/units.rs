//! Durations (`2s`, `1m30s`, `250ms`), sizes (`512m`, `1g`, `64MiB`), image
//! references and platforms (`linux/amd64`, `linux/arm64/v8`).

use std::time::Duration;

/// Parses a duration the way Compose writes them: one or more `<number><unit>`
/// groups with units `ns`, `us`, `ms`, `s`, `m`, `h`; fractions allowed (`1.5s`).
/// A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("an empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("`{s}` is not a duration"));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("`{s}` is not a duration"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("`{s}` has no unit (write `{s}s` for seconds)")),
            _ => return Err(format!("`{s}` is not a duration (units: ms, s, m, h)")),
        };
        total += number * scale;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(format!("`{s}` is too long a duration"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration in the largest units that keep it exact: `1m30s`, `250ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        if d.is_zero() {
            return "0s".into();
        }
        return format!("{}us", d.as_micros());
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

/// Parses a size in bytes: a plain number, or a number with `b`, `k`, `m`, `g`, `t`
/// (powers of 1024, as Docker reads them), optionally followed by `b` or `ib`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if num_len == 0 {
        return Err(format!("`{s}` is not a size"));
    }
    let number: f64 = s[..num_len]
        .parse()
        .map_err(|_| format!("`{s}` is not a size"))?;
    let unit = s[num_len..].trim().to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("`{s}` is not a size (units: k, m, g, t)")),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{s}` is too large"));
    }
    Ok(bytes as u64)
}

/// Checks an image reference against the grammar the engine accepts:
/// `[registry[:port]/]path[:tag][@digest]`, path components lowercase.
pub fn check_image_ref(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("an empty image reference".into());
    }
    if reference.len() > 255 + 128 + 80 {
        return Err("the image reference is too long".into());
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let (algo, hex) = digest
            .split_once(':')
            .ok_or_else(|| format!("digest `{digest}` should look like `sha256:<hex>`"))?;
        let algo_ok = !algo.is_empty()
            && algo
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        if !algo_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("digest `{digest}` should look like `sha256:<hex>`"));
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(format!(
                "tag `{tag}` may hold only letters, digits, `_`, `.` and `-` (at most 128)"
            ));
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // The first component is a registry host when it has a '.', a ':' or is localhost.
    if components.len() > 1 {
        let first = components[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            let host_ok = first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
            if !host_ok {
                return Err(format!("registry `{first}` is not a host name"));
            }
            components.remove(0);
        }
    }
    for component in components {
        let valid = !component.is_empty()
            && component
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && component.starts_with(|c: char| c.is_ascii_alphanumeric())
            && component.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            if component.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(format!("`{component}` must be lowercase in an image name"));
            }
            return Err(format!(
                "`{component}` is not a valid image name component (lowercase letters, digits, `.`, `_`, `-`)"
            ));
        }
    }
    Ok(())
}

/// Operating systems an image can be made for (Go's `GOOS` values, which
/// the OCI image index and Docker use).
const PLATFORM_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
];

/// Architectures (Go's `GOARCH` values) with the variants each may carry.
const PLATFORM_ARCH: &[(&str, &[&str])] = &[
    ("386", &[]),
    ("amd64", &["v1", "v2", "v3", "v4"]),
    ("arm", &["v5", "v6", "v7", "v8"]),
    ("arm64", &["v8", "v9"]),
    ("loong64", &[]),
    ("mips", &[]),
    ("mipsle", &[]),
    ("mips64", &[]),
    ("mips64le", &[]),
    ("ppc64", &[]),
    ("ppc64le", &[]),
    ("riscv64", &[]),
    ("s390x", &[]),
    ("wasm", &[]),
];

/// Names people write for an architecture (`uname -m`, Debian's) and the
/// platform they mean.
const ARCH_ALIASES: &[(&str, &str)] = &[
    ("x86_64", "amd64"),
    ("x86-64", "amd64"),
    ("x64", "amd64"),
    ("aarch64", "arm64"),
    ("armhf", "arm/v7"),
    ("armv7", "arm/v7"),
    ("armv7l", "arm/v7"),
    ("armel", "arm/v6"),
    ("armv6", "arm/v6"),
    ("i386", "386"),
    ("i686", "386"),
    ("x86", "386"),
];

/// Why a platform was refused, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformError {
    pub message: String,
    pub hint: String,
}

/// Checks a platform as Docker names them: `os/arch` or `os/arch/variant`,
/// lowercase, with known values only (an unknown one would only fail later,
/// at the pull, with the registry's wording).
pub fn check_platform(text: &str) -> Result<(), PlatformError> {
    let example = "write `os/arch[/variant]`, such as `linux/amd64` or `linux/arm64/v8`";
    let parts: Vec<&str> = text.split('/').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(PlatformError {
            message: format!("`{text}` is not a platform"),
            hint: example.into(),
        });
    }
    let (os, arch, variant) = (parts[0], parts[1], parts.get(2).copied());
    let lower = text.to_ascii_lowercase();
    if lower != text {
        let fixed = check_platform(&lower).map(|()| lower);
        return Err(PlatformError {
            message: format!("the platform `{text}` is not lowercase"),
            hint: match fixed {
                Ok(fixed) => format!("write `{fixed}`"),
                Err(_) => example.into(),
            },
        });
    }
    if !PLATFORM_OS.contains(&os) {
        return Err(PlatformError {
            message: format!("unknown operating system `{os}` in the platform `{text}`"),
            hint: format!("one of: {}", PLATFORM_OS.join(", ")),
        });
    }
    let Some((_, variants)) = PLATFORM_ARCH.iter().find(|(a, _)| *a == arch) else {
        let hint = match ARCH_ALIASES.iter().find(|(alias, _)| *alias == arch) {
            Some((_, meant)) => format!("Docker calls it `{os}/{meant}`"),
            None => format!(
                "one of: {}",
                PLATFORM_ARCH
                    .iter()
                    .map(|(a, _)| *a)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Err(PlatformError {
            message: format!("unknown architecture `{arch}` in the platform `{text}`"),
            hint,
        });
    };
    if let Some(variant) = variant {
        if !variants.contains(&variant) {
            return Err(PlatformError {
                message: format!(
                    "`{variant}` is not a variant of `{arch}` in the platform `{text}`"
                ),
                hint: if variants.is_empty() {
                    format!("`{arch}` has no variants: write `{os}/{arch}`")
                } else {
                    format!("one of: {}", variants.join(", "))
                },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1..2s").is_err());
        assert!(parse_duration("99999999999999h").is_err());
    }

    #[test]
    fn duration_round_trip() {
        for text in ["0s", "250ms", "2s", "1m30s", "1h", "2h5m3s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("99999999999t").is_err());
    }

    #[test]
    fn image_refs() {
        for good in [
            "api:git-3f2a9c1",
            "postgres",
            "postgres:15",
            "docker.io/library/redis:7.2-alpine",
            "localhost:5000/team/api:v1",
            "devstack-fixtures/base",
            "mongo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_image_ref(good), Ok(()), "{good}");
        }
        for bad in [
            "", "API:1", "api:", "api::1", "api:-x", "a//b", "api@md5", "-api",
        ] {
            assert!(check_image_ref(bad).is_err(), "{bad}");
        }
    }
    #[test]
    fn platforms() {
        for good in [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/arm/v7",
            "windows/amd64",
            "linux/s390x",
            "linux/amd64/v3",
        ] {
            assert_eq!(check_platform(good), Ok(()), "{good}");
        }
        for (bad, message, hint) in [
            ("amd64", "is not a platform", "os/arch"),
            ("linux/", "is not a platform", "os/arch"),
            ("linux/amd64/v8/x", "is not a platform", "os/arch"),
            ("Linux/AMD64", "not lowercase", "`linux/amd64`"),
            (
                "linux/x86_64",
                "unknown architecture `x86_64`",
                "`linux/amd64`",
            ),
            ("linux/aarch64", "unknown architecture", "`linux/arm64`"),
            ("linux/sparc", "unknown architecture", "one of: 386, amd64"),
            ("beos/amd64", "unknown operating system `beos`", "linux"),
            ("linux/arm64/v7", "not a variant of `arm64`", "v8"),
            ("linux/s390x/v1", "not a variant", "has no variants"),
        ] {
            let err = check_platform(bad).expect_err(bad);
            assert!(err.message.contains(message), "{bad}: {err:?}");
            assert!(err.hint.contains(hint), "{bad}: {err:?}");
        }
    }
}
