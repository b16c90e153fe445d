//! Per-institution token buckets, one set per rpc family (transfers, consent
//! changes, log queries: `cii_types::access::Family`), taken by the
//! `Authenticate` interceptor before a request is decoded; and the enrolment
//! limit, which the gateway takes itself. Enrolment is the one rpc that turns an
//! AVS-derived value into a pseudonym, so its rate bounds how fast anyone
//! holding an institution's credentials could walk the AVS space.
//!
//! Limits are per process: with several gateway replicas each holds its own
//! buckets (the documented meaning, docs/security.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cii_types::InstitutionId;
use cii_types::access::Family;
use serde::Deserialize;

/// One family's limit as configured.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained calls per minute.
    pub per_minute: u32,
    /// Calls allowed at once.
    pub burst: u32,
}

/// The `[limits]` section: per institution and family, with defaults sized for a
/// canton's busiest office (a batch run) and far below what exhausts a process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    /// Transfers (send, request).
    pub transfers: Rate,
    /// Consent and relationship changes.
    pub consent_changes: Rate,
    /// Audit-log queries and DPO lookups.
    pub queries: Rate,
    /// Gateway only: pushes whose decision turns on whether the recipient serves the person
    /// (the sender is not told it; each one could be a probe for that relationship).
    pub relationship_pushes: Rate,
}

impl Default for LimitsFile {
    fn default() -> LimitsFile {
        LimitsFile {
            transfers: Rate {
                per_minute: 1200,
                burst: 200,
            },
            consent_changes: Rate {
                per_minute: 600,
                burst: 100,
            },
            queries: Rate {
                per_minute: 60,
                burst: 10,
            },
            // A decision copy per decision an AI office takes: an office's daily batch, not
            // a search through the population.
            relationship_pushes: Rate {
                per_minute: 120,
                burst: 60,
            },
        }
    }
}

/// The buckets of every family.
#[derive(Debug)]
pub struct Limits {
    transfers: RateLimit,
    consent_changes: RateLimit,
    queries: RateLimit,
}

impl Limits {
    /// The limits of `file`.
    pub fn new(file: &LimitsFile) -> Limits {
        let limit = |r: Rate| RateLimit::new(r.per_minute, r.burst);
        Limits {
            transfers: limit(file.transfers),
            consent_changes: limit(file.consent_changes),
            queries: limit(file.queries),
        }
    }

    /// Takes one call of `family` for `who`, or says how long until the next one.
    pub fn take(&self, family: Family, who: &InstitutionId, now: Instant) -> Result<(), Duration> {
        match family {
            Family::Transfers => self.transfers.take(who, now),
            Family::ConsentChanges => self.consent_changes.take(who, now),
            Family::Queries => self.queries.take(who, now),
        }
    }
}

/// Token buckets keyed by institution.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<InstitutionId, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// `per_minute` sustained, up to `burst` at once.
    pub fn new(per_minute: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `who` at `now`, or says how long until the next one.
    pub fn take(&self, who: &InstitutionId, now: Instant) -> Result<(), Duration> {
        // A poisoned lock means a panic elsewhere; refuse rather than run unlimited.
        let Ok(mut buckets) = self.buckets.lock() else {
            return Err(Duration::from_secs(1));
        };
        let bucket = buckets.entry(who.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else if self.per_second > 0.0 {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        } else {
            Err(Duration::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_institution() {
        let limit = RateLimit::new(60, 3);
        let orp = InstitutionId::parse("id", "ORP-VS").unwrap();
        let ai = InstitutionId::parse("id", "AI-VS").unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limit.take(&orp, t0).is_ok());
        }
        let wait = limit.take(&orp, t0).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::from_millis(900),
            "{wait:?}"
        );
        // Another institution has its own bucket.
        assert!(limit.take(&ai, t0).is_ok());
        // One per second refills.
        assert!(limit.take(&orp, t0 + Duration::from_millis(1000)).is_ok());
        assert!(limit.take(&orp, t0 + Duration::from_millis(1000)).is_err());
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limit.take(&orp, later).is_ok());
        }
        assert!(limit.take(&orp, later).is_err());
    }
}
