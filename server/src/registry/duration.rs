//! The textual form of `ttl` and `retention` in specs: a whole number followed
//! by one unit, `s`, `m`, `h` or `d` (`90s`, `30m`, `24h`, `365d`).
//!
//! Durations are held as whole seconds. Parsing accepts a sign so that a
//! negative lifetime reaches validation and is reported as `ttl <= 0` rather
//! than as a syntax error.

/// Units accepted after the number, with their length in seconds.
const UNITS: [(char, i64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// Parses `"<integer><unit>"` into seconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: write a whole number and a unit (s, m, h or d), e.g. `7d`"
        )
    };
    let unit = text.chars().last().ok_or_else(bad)?;
    let (_, seconds) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?;
    let number: i64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
    number
        .checked_mul(*seconds)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// Formats seconds in the largest unit that divides them exactly.
pub fn format_duration(seconds: i64) -> String {
    let (unit, len) = UNITS
        .iter()
        .find(|(_, len)| seconds % len == 0)
        .copied()
        .unwrap_or(('s', 1));
    format!("{}{unit}", seconds / len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_round_trips() {
        for (text, secs) in [
            ("90s", 90),
            ("30m", 1_800),
            ("24h", 86_400),
            ("365d", 31_536_000),
        ] {
            assert_eq!(parse_duration(text), Ok(secs));
        }
        assert_eq!(parse_duration("-1d"), Ok(-86_400));
        for secs in [1, 59, 60, 3_600, 90_000, 86_400 * 7, 0, -60] {
            assert_eq!(parse_duration(&format_duration(secs)), Ok(secs));
        }
        assert_eq!(format_duration(86_400), "1d");
        assert_eq!(format_duration(5_400), "90m");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "d", "7", "7 d", "7days", "1.5h", "7D", "x7d"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("is not a duration"), "{err}");
        }
        assert!(parse_duration(&format!("{}d", i64::MAX))
            .expect_err("overflow")
            .contains("too long"));
    }
}
