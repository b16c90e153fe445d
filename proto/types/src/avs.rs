//! The AVS number (AHVN13 / NAVS13): `756.XXXX.XXXX.XC`, dots optional,
//! with a GS1 / EAN-13 check digit.
//!
//! INVARIANT (avs-stays-at-the-node): an `AvsNumber` has a redacted `Debug`,
//! no `Display` and no `Serialize`, and errors never quote the input, so it
//! cannot reach a log line, a metric or an error message by accident. Code
//! that must use the digits (hashing, encryption at the node) calls
//! [`AvsNumber::expose_digits`], which is easy to find in review.

use std::fmt;

/// A valid AVS number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AvsNumber([u8; 13]);

/// Why a text is not an AVS number. Messages never echo the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AvsError {
    /// Not 13 digits (with or without the dots of `756.XXXX.XXXX.XC`).
    #[error("avs_number: expected 13 digits, written 756.XXXX.XXXX.XC or without dots")]
    Format,
    /// Does not start with the Swiss prefix 756.
    #[error("avs_number: must start with 756")]
    Prefix,
    /// The check digit is wrong (a typing error).
    #[error("avs_number: check digit does not match")]
    CheckDigit,
}

impl AvsError {
    /// Stable machine code.
    pub fn code(self) -> &'static str {
        match self {
            AvsError::Format => "AVS_FORMAT",
            AvsError::Prefix => "AVS_PREFIX",
            AvsError::CheckDigit => "AVS_CHECK_DIGIT",
        }
    }

    /// The field at fault.
    pub fn field(self) -> &'static str {
        "avs_number"
    }
}

/// The EAN-13 check digit of the first twelve digits: weights 1, 3, 1, 3, … from the left.
pub fn check_digit(first12: &[u8; 12]) -> u8 {
    let sum: u32 = first12
        .iter()
        .enumerate()
        .map(|(i, d)| u32::from(*d) * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Whether `text` could carry an AVS number: its digits, whatever separates them, are 13
/// and begin with 756. Free-form identifiers that the network logs or stores (transfer
/// ids, record ids, obligation notes) are refused when this holds, so an AVS number
/// typed into one never reaches the gateway's tables or the audit log.
///
/// INVARIANT (avs-stays-at-the-node): this is the one definition of the look-alike rule;
/// node and gateway both call it (a tidy test keeps it here).
pub fn looks_like_avs(text: &str) -> bool {
    let mut digits = text.bytes().filter(u8::is_ascii_digit);
    let prefix: Vec<u8> = digits.by_ref().take(3).collect();
    prefix == b"756" && digits.count() == 10
}

/// Whether `text` carries an AVS number anywhere: a run of digits and dots (nothing else
/// between them) whose digits are 13, begin with 756 and end with a correct check digit.
/// For free text that reaches the log (an account name, a purpose), where other characters
/// may surround it; stricter than [`looks_like_avs`] on where the number may sit, and looser
/// on what counts (the check digit must hold), so account names such as UUIDs or long
/// numeric ids are not refused by chance.
pub fn contains_avs(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.')).any(|token| {
        let digits: Vec<u8> = token.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
        match <[u8; 13]>::try_from(digits.as_slice()) {
            Ok(d) => {
                d.starts_with(&[7, 5, 6])
                    && d[..12]
                        .try_into()
                        .is_ok_and(|first: [u8; 12]| check_digit(&first) == d[12])
            }
            Err(_) => false,
        }
    })
}

/// Whether `text` hides an AVS number among other characters: its digits, read in order with
/// everything else dropped, contain 13 in a row that begin with 756 and end with a correct check
/// digit. For identifiers a member chooses and the log keeps (a case reference), where
/// separators (`A1-756-1234-5678-97`) must not disguise the number.
pub fn hides_avs(text: &str) -> bool {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    digits.windows(13).any(|w| {
        w.starts_with(&[7, 5, 6])
            && w.split_last()
                .is_some_and(|(last, first)| <[u8; 12]>::try_from(first).is_ok_and(|f| check_digit(&f) == *last))
    })
}

impl AvsNumber {
    /// Parses `756.1234.5678.97` or `7561234567897`.
    pub fn parse(text: &str) -> Result<AvsNumber, AvsError> {
        let bytes = text.as_bytes();
        let digits: Vec<u8> = match bytes.len() {
            13 => bytes.to_vec(),
            16 => {
                // Dots exactly at the grouping positions 3.4.4.2.
                if [3, 8, 13].iter().any(|&i| bytes.get(i) != Some(&b'.')) {
                    return Err(AvsError::Format);
                }
                bytes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| ![3, 8, 13].contains(i))
                    .map(|(_, b)| *b)
                    .collect()
            }
            _ => return Err(AvsError::Format),
        };
        let mut out = [0u8; 13];
        for (slot, b) in out.iter_mut().zip(&digits) {
            if !b.is_ascii_digit() {
                return Err(AvsError::Format);
            }
            *slot = b - b'0';
        }
        if !out.starts_with(&[7, 5, 6]) {
            return Err(AvsError::Prefix);
        }
        let mut first12 = [0u8; 12];
        for (slot, d) in first12.iter_mut().zip(out.iter()) {
            *slot = *d;
        }
        if Some(&check_digit(&first12)) != out.last() {
            return Err(AvsError::CheckDigit);
        }
        Ok(AvsNumber(out))
    }

    /// The 13 digits without dots. Only the node's pseudonymisation and its
    /// encrypted store may call this.
    pub fn expose_digits(&self) -> String {
        self.0.iter().map(|d| char::from(b'0' + d)).collect()
    }
}

impl fmt::Debug for AvsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AvsNumber(756.****.****.**)")
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_number_hidden_among_separators_is_found() {
        for hidden in [
            "A1-756-1234-5678-97",
            "case 7561234567897",
            "x756.1234.5678.97y",
            "1-7-5-6-1-2-3-4-5-6-7-8-9-7",
        ] {
            assert!(hides_avs(hidden), "{hidden}");
        }
        for clean in ["ORP-2026-0417", "A1-756-1234-5678-98", "7561234", "HG-2026-17"] {
            assert!(!hides_avs(clean), "{clean}");
        }
    }
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_avs_number_inside_free_text_is_found_and_other_digits_are_not() {
        for carrying in [
            "756.1234.5678.97",
            "u7561234567897",
            "Case 1: 756.1234.5678.97",
            "x-7561234567897-y",
        ] {
            assert!(contains_avs(carrying), "{carrying}");
        }
        for clean in [
            "34699f7a-c5f6-43a1-9f3f-59eb65c8a07c",
            "123756123456789012345",
            "u756012345678",
            "756.1234.5678.90",
            "anna.muster",
            "early_detection",
        ] {
            assert!(!contains_avs(clean), "{clean}");
        }
    }

    #[test]
    fn the_reference_examples() {
        assert!(AvsNumber::parse("756.1234.5678.97").is_ok());
        assert!(AvsNumber::parse("7561234567897").is_ok());
        assert_eq!(AvsNumber::parse("756.1234.5678.90"), Err(AvsError::CheckDigit));
        assert_eq!(AvsNumber::parse("757.1234.5678.97"), Err(AvsError::Prefix));
        assert_eq!(AvsNumber::parse("756.1234.5678.9"), Err(AvsError::Format));
        assert_eq!(AvsNumber::parse("7561.234.5678.97"), Err(AvsError::Format));
        assert_eq!(AvsNumber::parse("756.1234.5678.9x"), Err(AvsError::Format));
        assert_eq!(AvsNumber::parse(""), Err(AvsError::Format));
        assert_eq!(
            AvsNumber::parse("756.1234.5678.97").unwrap().expose_digits(),
            "7561234567897"
        );
    }

    #[test]
    fn nothing_prints_the_number() {
        let avs = AvsNumber::parse("756.1234.5678.97").unwrap();
        let debug = format!("{avs:?}");
        assert!(!debug.contains("1234") && !debug.contains("5678"), "{debug}");
        for text in ["756.1234.5678.90", "757.1234.5678.97", "756.1234.5678.9"] {
            let e = AvsNumber::parse(text).unwrap_err();
            assert!(
                !e.to_string().contains("1234") && !e.to_string().contains("5678"),
                "{e}"
            );
        }
    }

    fn valid() -> impl Strategy<Value = [u8; 13]> {
        proptest::array::uniform9(0u8..10).prop_map(|body| {
            let mut first12 = [0u8; 12];
            first12[..3].copy_from_slice(&[7, 5, 6]);
            first12[3..].copy_from_slice(&body);
            let mut all = [0u8; 13];
            all[..12].copy_from_slice(&first12);
            all[12] = check_digit(&first12);
            all
        })
    }

    fn text(d: &[u8; 13], dots: bool) -> String {
        let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
        if dots {
            format!("{}.{}.{}.{}", &s[..3], &s[3..7], &s[7..11], &s[11..])
        } else {
            s
        }
    }

    proptest! {
        #[test]
        fn every_number_with_a_correct_check_digit_parses(d in valid(), dots in any::<bool>()) {
            let avs = AvsNumber::parse(&text(&d, dots)).unwrap();
            prop_assert_eq!(avs.expose_digits(), text(&d, false));
        }

        #[test]
        fn any_single_digit_change_is_rejected(d in valid(), pos in 0usize..13, delta in 1u8..10, dots in any::<bool>()) {
            let mut changed = d;
            changed[pos] = (changed[pos] + delta) % 10;
            prop_assert!(AvsNumber::parse(&text(&changed, dots)).is_err());
        }
    }
}
