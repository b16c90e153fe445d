//! Time as the network writes it: microseconds since the Unix epoch (UTC) in
//! stores and audit entries, `google.protobuf.Timestamp` on the wire.
//!
//! INVARIANT (one-time-conversion): every conversion between `OffsetDateTime`,
//! microseconds and `Timestamp` happens here; a tidy test refuses the
//! arithmetic anywhere else, so two processes never round a moment differently.

use time::OffsetDateTime;

/// Microseconds since the Unix epoch; saturates far outside the years anyone uses.
pub fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(if t.unix_timestamp() < 0 { i64::MIN } else { i64::MAX })
}

/// The moment `micros` microseconds after the Unix epoch; `None` outside `time`'s range.
pub fn from_micros(micros: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()
}

/// The wire form of a moment.
pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

/// The wire form of a moment given in microseconds.
pub fn timestamp_of_micros(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// Microseconds of a wire timestamp (nanoseconds truncated; out-of-range nanos clamped).
pub fn micros_of_timestamp(t: &prost_types::Timestamp) -> i64 {
    let nanos = i64::from(t.nanos.clamp(0, 999_999_999));
    t.seconds.saturating_mul(1_000_000).saturating_add(nanos / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_agree() {
        let t = time::macros::datetime!(2026-12-02 15:13:23.123_456 UTC);
        let m = micros(t);
        assert_eq!(m, 1_796_224_403_123_456);
        assert_eq!(from_micros(m), Some(t));
        assert_eq!(timestamp_of_micros(m), timestamp(t));
        assert_eq!(micros_of_timestamp(&timestamp(t)), m);
        // Before the epoch: floor division, never a negative nanosecond.
        let early = timestamp_of_micros(-1);
        assert_eq!((early.seconds, early.nanos), (-1, 999_999_000));
        assert_eq!(micros_of_timestamp(&early), -1);
    }
}
