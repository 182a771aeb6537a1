//! Kubernetes resource quantities (`500m`, `2Gi`, `1.5`, `1e3`), parsed and compared exactly.
//!
//! The API server refuses a Job whose quantity does not parse (400, before validation) and one
//! whose limit is below its request (422). Both are config mistakes, so they are caught here,
//! with the user's text kept verbatim for the manifest.

use std::cmp::Ordering;
use std::fmt;

use serde::{Serialize, Serializer};

/// A parsed quantity. Equality and ordering compare the value, not the spelling:
/// `1Gi == 1024Mi` and `0.5 == 500m`.
#[derive(Debug, Clone)]
pub struct Quantity {
    text: String,
    negative: bool,
    /// The magnitude in units of 10⁻⁹, rounded up like the API server rounds sub-nano values.
    nanos: u128,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow the quantity grammar.
    #[error("`{0}` is not a Kubernetes quantity")]
    Syntax(String),
    /// The value does not fit the 64-bit range Kubernetes stores.
    #[error("`{0}` is too large for a Kubernetes quantity")]
    TooLarge(String),
}

const NANOS_PER_UNIT_EXP: i32 = 9;
/// Above an int64 of whole units no resource amount makes sense; refusing early keeps the
/// arithmetic in u128.
const MAX_NANOS: u128 = (i64::MAX as u128) * 1_000_000_000;

impl Quantity {
    /// Parses `<sign>?<digits>[.<digits>]<suffix>` where the suffix is one of `Ki Mi Gi Ti Pi
    /// Ei`, `n u m k M G T P E`, `e<int>`/`E<int>`, or nothing.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let syntax = || QuantityError::Syntax(text.to_owned());
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let (number, suffix) = rest.split_at(number_len);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
            return Err(syntax());
        }
        let (exp10, pow1024) = suffix_scale(suffix).ok_or_else(syntax)?;
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let too_large = || QuantityError::TooLarge(text.to_owned());
        // Up to 38 significant digits fit u128; more is never a sensible resource amount.
        if digits.len() > 38 {
            return Err(too_large());
        }
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| syntax())?
        };
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| too_large())?;
        let scale = exp10 - frac_len + NANOS_PER_UNIT_EXP;
        let mut nanos = mantissa;
        for _ in 0..pow1024 {
            nanos = nanos.checked_mul(1024).ok_or_else(too_large)?;
        }
        if scale >= 0 {
            let factor = 10u128
                .checked_pow(scale.unsigned_abs())
                .ok_or_else(too_large)?;
            nanos = nanos.checked_mul(factor).ok_or_else(too_large)?;
        } else if nanos != 0 {
            nanos = match 10u128.checked_pow(scale.unsigned_abs()) {
                Some(divisor) => nanos.div_ceil(divisor),
                // Smaller than any representable divisor: rounds up to the smallest unit.
                None => 1,
            };
        }
        if nanos > MAX_NANOS {
            return Err(too_large());
        }
        Ok(Quantity {
            text: text.to_owned(),
            negative: negative && nanos != 0,
            nanos,
        })
    }

    /// The text as the user wrote it; this is what goes into the manifest.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the value is strictly above zero.
    pub fn is_positive(&self) -> bool {
        !self.negative && self.nanos > 0
    }

    fn signed_cmp(&self, other: &Quantity) -> Ordering {
        match (self.negative, other.negative) {
            (false, false) => self.nanos.cmp(&other.nanos),
            (true, true) => other.nanos.cmp(&self.nanos),
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
        }
    }
}

/// The powers of ten and of 1024 a quantity's suffix stands for; `None` for an unknown one.
fn suffix_scale(suffix: &str) -> Option<(i32, u32)> {
    Some(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        s if s.starts_with(['e', 'E']) => (parse_exponent(&s[1..])?, 0),
        _ => return None,
    })
}

/// A decimal exponent: an optionally signed integer of at most 3 digits.
fn parse_exponent(s: &str) -> Option<i32> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.signed_cmp(other) == Ordering::Equal
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.signed_cmp(other)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn accepts_every_suffix_family() {
        for s in [
            "1", "1000m", "0.5", ".5", "5.", "+2", "2Gi", "512Mi", "1.5G", "1e3", "1E-3", "100n",
            "3u", "4k", "1Ei", "1Ti", "7Pi", "2Ki", "1P", "1T", "1M", "1E",
        ] {
            assert!(Quantity::parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn rejects_what_the_apiserver_refuses_to_decode() {
        for s in [
            "", "2Gb", "1.2.3", "Gi", ".", "1 Gi", "1KI", "1e", "1e1.5", "1mi", "abc", "-",
        ] {
            assert_eq!(
                Quantity::parse(s),
                Err(QuantityError::Syntax(s.to_owned())),
                "{s}"
            );
        }
        assert!(matches!(
            Quantity::parse("99999999999Ei"),
            Err(QuantityError::TooLarge(_))
        ));
    }

    #[test]
    fn compares_values_not_spellings() {
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1000m"), q("1"));
        assert!(q("4000m") > q("1000m"));
        assert!(q("8Gi") > q("8G"));
        assert!(q("-1") < q("0"));
        assert_eq!(q("-0"), q("0"));
    }

    #[test]
    fn keeps_the_original_text() {
        assert_eq!(q("1.5G").as_str(), "1.5G");
        assert_eq!(serde_json::to_string(&q("2Gi")).unwrap(), "\"2Gi\"");
    }

    #[test]
    fn positivity() {
        assert!(q("1m").is_positive());
        assert!(!q("0").is_positive());
        assert!(!q("-1").is_positive());
        assert!(
            q("1e-12").is_positive(),
            "sub-nano values round up, like the API server"
        );
    }
}
