//! MOSIP timestamps (spec 1.3).

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`: `responsetime`, encrypt/decrypt `timeStamp`, certificate dates.
const STRICT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Formats a UTC instant as `2025-01-15T10:20:30.123Z`.
pub fn format_strict(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    // Formatting a valid date with this description cannot fail.
    t.format(STRICT).unwrap_or_default()
}

/// Now, as `format_strict`.
pub fn now_strict() -> String {
    format_strict(OffsetDateTime::now_utc())
}

/// Parses the strict form: exactly three fraction digits and a literal `Z`.
///
/// # Errors
/// The `time` parse error when the text does not match exactly.
pub fn parse_strict(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    Ok(PrimitiveDateTime::parse(text, STRICT)?.assume_utc())
}

/// Parses what Jackson accepts for a `LocalDateTime` (`requesttime`, un-annotated
/// `timestamp`s): ISO local date-time with optional fraction and optional trailing `Z`.
/// Read as UTC.
///
/// # Errors
/// The `time` parse error when the text is not an ISO local date-time.
pub fn parse_lenient(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    const LOCAL: &[FormatItem<'static>] = format_description!(
        "[year]-[month]-[day]T[hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
    );
    let text = text.strip_suffix('Z').unwrap_or(text);
    Ok(PrimitiveDateTime::parse(text, LOCAL)?.assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn strict_round_trip() {
        let t = datetime!(2025-01-15 10:20:30.123 UTC);
        assert_eq!(format_strict(t), "2025-01-15T10:20:30.123Z");
        assert_eq!(parse_strict("2025-01-15T10:20:30.123Z").unwrap(), t);
        assert_eq!(
            format_strict(datetime!(2025-01-15 10:20:30 UTC)),
            "2025-01-15T10:20:30.000Z"
        );
    }

    #[test]
    fn strict_rejects_other_shapes() {
        for bad in [
            "2025-01-15T10:20:30Z",
            "2025-01-15T10:20:30.12Z",
            "2025-01-15T10:20:30.1234Z",
            "2025-01-15T10:20:30.123",
            "2025-01-15 10:20:30.123Z",
            "",
        ] {
            assert!(parse_strict(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lenient_accepts_jackson_shapes() {
        for ok in [
            "2025-01-15T10:20:30.456789",
            "2025-01-15T10:20:30.123Z",
            "2025-01-15T10:20:30",
            "2025-01-15T10:20",
        ] {
            assert!(parse_lenient(ok).is_ok(), "{ok}");
        }
        assert!(parse_lenient("yesterday").is_err());
    }

    #[test]
    fn now_has_the_strict_shape() {
        let now = now_strict();
        assert!(parse_strict(&now).is_ok(), "{now}");
    }
}
