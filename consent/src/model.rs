//! What a consent is, when it is valid, and whether it covers a transfer.
//! Pure: the store persists [`Consent`]s, the service converts them to and
//! from the wire; the rules live here.

use std::collections::BTreeSet;

/// Microseconds since the Unix epoch (UTC).
pub type Micros = i64;

/// Longest validity a consent may have: consent is time-limited (legal.md §5).
pub const MAX_VALIDITY_MICROS: Micros = 5 * 366 * 24 * 3600 * 1_000_000;
/// Longest evidence reference.
pub const MAX_EVIDENCE_REFERENCE: usize = 256;
/// Longest text of the information given to the person.
pub const MAX_INFORMATION: usize = 2_000;
/// Languages a declaration may be in.
pub const LANGUAGES: &[&str] = &["fr", "de", "it", "rm", "en"];
/// How a person may revoke.
pub const CHANNELS: &[&str] = &["in_person", "letter", "email", "phone", "portal", "representative"];

/// One-off or recurring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrence {
    /// For one exchange.
    OneOff,
    /// For every exchange within scope and period.
    Recurring,
}

/// A recorded revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// When the registry recorded it.
    pub at: Micros,
    /// The institution that recorded it.
    pub institution: String,
    /// The user who recorded it.
    pub user: String,
    /// How the person revoked.
    pub channel: String,
}

/// A consent declaration, one version of it. The person is kept beside it by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// Stable id.
    pub id: String,
    /// Version, from 1.
    pub version: u32,
    /// Recording institution (registry id).
    pub recorded_by: String,
    /// Recording user.
    pub recorded_by_user: String,
    /// When this version was recorded.
    pub recorded_at: Micros,
    /// Institutions covered (registry ids).
    pub institutions: BTreeSet<String>,
    /// Directions of flow allowed (from, to).
    pub directions: BTreeSet<(String, String)>,
    /// Categories covered.
    pub categories: BTreeSet<String>,
    /// Purposes covered.
    pub purposes: BTreeSet<String>,
    /// Start of validity.
    pub valid_from: Micros,
    /// End of validity.
    pub valid_until: Micros,
    /// Given in writing.
    pub written: bool,
    /// SHA-256 of the signed document (empty if none).
    pub evidence_sha256: Vec<u8>,
    /// Where the signed document is kept.
    pub evidence_reference: String,
    /// One-off or recurring.
    pub recurrence: Recurrence,
    /// The recipient may pass the data on.
    pub onward_transfer_allowed: bool,
    /// What the person was told.
    pub information_given: String,
    /// Capacity of a representative who signed; empty if the person signed.
    pub representative: String,
    /// Language of the declaration.
    pub language: String,
    /// Set when revoked.
    pub revocation: Option<Revocation>,
}

/// A consent's state at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// In force.
    Active,
    /// Revoked.
    Revoked,
    /// Period ended.
    Expired,
    /// Period not begun.
    NotYetValid,
}

impl Consent {
    /// The state at `at`. A revocation counts from the moment it was recorded on,
    /// whatever `at` says: nobody may rely on a revoked consent any more.
    pub fn status(&self, at: Micros) -> Status {
        if self.revocation.is_some() {
            Status::Revoked
        } else if at > self.valid_until {
            Status::Expired
        } else if at < self.valid_from {
            Status::NotYetValid
        } else {
            Status::Active
        }
    }

    /// Whether `institution` may see this consent (it is covered, or recorded it).
    pub fn concerns(&self, institution: &str) -> bool {
        self.institutions.contains(institution) || self.recorded_by == institution
    }
}

/// A transfer in question.
#[derive(Debug, Clone)]
pub struct Question<'a> {
    /// Disclosing institution.
    pub sender: &'a str,
    /// Receiving institution.
    pub recipient: &'a str,
    /// Categories requested.
    pub categories: &'a [String],
    /// Purpose.
    pub purpose: &'a str,
    /// When.
    pub at: Micros,
}

/// A consent's answer to a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It covers these of the requested categories (at least one), not those.
    Covers {
        /// Covered.
        covered: Vec<String>,
        /// Not covered.
        uncovered: Vec<String>,
    },
    /// It does not cover the transfer, for these stable reasons.
    DoesNotCover(Vec<&'static str>),
}

/// Whether `consent` covers `question`, and if not, every reason why.
pub fn answer(consent: &Consent, question: &Question<'_>) -> Answer {
    let mut reasons = Vec::new();
    match consent.status(question.at) {
        Status::Active => {}
        Status::Revoked => reasons.push("REVOKED"),
        Status::Expired => reasons.push("EXPIRED"),
        Status::NotYetValid => reasons.push("NOT_YET_VALID"),
    }
    let sender_in = consent.institutions.contains(question.sender);
    let recipient_in = consent.institutions.contains(question.recipient);
    if !sender_in {
        reasons.push("SENDER_NOT_COVERED");
    }
    if !recipient_in {
        reasons.push("RECIPIENT_NOT_COVERED");
    }
    if sender_in
        && recipient_in
        && !consent
            .directions
            .contains(&(question.sender.to_owned(), question.recipient.to_owned()))
    {
        reasons.push("DIRECTION_NOT_COVERED");
    }
    if !consent.purposes.contains(question.purpose) {
        reasons.push("PURPOSE_NOT_COVERED");
    }
    let (covered, uncovered): (Vec<String>, Vec<String>) = question
        .categories
        .iter()
        .cloned()
        .partition(|c| consent.categories.contains(c));
    if covered.is_empty() {
        reasons.push("CATEGORIES_NOT_COVERED");
    }
    if reasons.is_empty() {
        Answer::Covers { covered, uncovered }
    } else {
        Answer::DoesNotCover(reasons)
    }
}

/// Input refused: a stable code, the field at fault, and a message without personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// Stable code.
    pub code: &'static str,
    /// The field at fault (request path).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Shorthand for an [`Invalid`].
pub fn invalid(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        code,
        field: field.into(),
        message: message.into(),
    }
}

/// What a declaration is checked against: the network's institutions and the rulebook's vocabulary.
pub trait Vocabulary {
    /// A registry id.
    fn knows_institution(&self, id: &str) -> bool;
    /// A data category id.
    fn knows_category(&self, id: &str) -> bool;
    /// A purpose id.
    fn knows_purpose(&self, id: &str) -> bool;
}

/// Checks a declaration as submitted (before id, version and recording time are assigned).
/// The recorder must be among the covered institutions.
pub fn check(consent: &Consent, vocabulary: &dyn Vocabulary) -> Result<(), Invalid> {
    const C: &str = "consent";
    if consent.institutions.len() < 2 {
        return Err(invalid(
            "SCOPE_EMPTY",
            format!("{C}.institutions"),
            "a consent covers at least two institutions, named by registry id",
        ));
    }
    for id in &consent.institutions {
        if !vocabulary.knows_institution(id) {
            return Err(invalid(
                "UNKNOWN_INSTITUTION",
                format!("{C}.institutions"),
                format!("{id} is not in the registry (institutions are named by registry id, never by type)"),
            ));
        }
    }
    if !consent.institutions.contains(&consent.recorded_by) {
        return Err(invalid(
            "RECORDER_NOT_COVERED",
            format!("{C}.institutions"),
            format!(
                "the recording institution {} must be among the covered institutions",
                consent.recorded_by
            ),
        ));
    }
    if consent.directions.is_empty() {
        return Err(invalid(
            "SCOPE_EMPTY",
            format!("{C}.directions"),
            "name at least one direction of flow",
        ));
    }
    for (from, to) in &consent.directions {
        if from == to {
            return Err(invalid(
                "DIRECTION_TO_SELF",
                format!("{C}.directions"),
                format!("{from} → {to} is not a transfer"),
            ));
        }
        if !consent.institutions.contains(from) || !consent.institutions.contains(to) {
            return Err(invalid(
                "DIRECTION_OUTSIDE_SCOPE",
                format!("{C}.directions"),
                format!("{from} → {to}: both ends must be covered institutions"),
            ));
        }
    }
    if consent.categories.is_empty() {
        return Err(invalid(
            "SCOPE_EMPTY",
            format!("{C}.categories"),
            "name at least one data category",
        ));
    }
    if let Some(unknown) = consent.categories.iter().find(|c| !vocabulary.knows_category(c)) {
        return Err(invalid(
            "UNKNOWN_CATEGORY",
            format!("{C}.categories"),
            format!("{unknown} is not a category of the rulebook"),
        ));
    }
    if consent.purposes.is_empty() {
        return Err(invalid(
            "SCOPE_EMPTY",
            format!("{C}.purposes"),
            "name at least one purpose",
        ));
    }
    if let Some(unknown) = consent.purposes.iter().find(|p| !vocabulary.knows_purpose(p)) {
        return Err(invalid(
            "UNKNOWN_PURPOSE",
            format!("{C}.purposes"),
            format!("{unknown} is not a purpose of the rulebook"),
        ));
    }
    if consent.valid_until < consent.valid_from {
        return Err(invalid(
            "VALIDITY_INVERTED",
            format!("{C}.valid_until"),
            "valid_until is before valid_from",
        ));
    }
    if consent.valid_until - consent.valid_from > MAX_VALIDITY_MICROS {
        return Err(invalid(
            "VALIDITY_TOO_LONG",
            format!("{C}.valid_until"),
            "a consent is time-limited: at most five years",
        ));
    }
    if consent.evidence_reference.chars().count() > MAX_EVIDENCE_REFERENCE {
        return Err(invalid(
            "EVIDENCE_REFERENCE_TOO_LONG",
            format!("{C}.evidence_reference"),
            format!("at most {MAX_EVIDENCE_REFERENCE} characters (a storage reference, not the document)"),
        ));
    }
    if !consent.evidence_sha256.is_empty() && consent.evidence_sha256.len() != 32 {
        return Err(invalid(
            "EVIDENCE_HASH_LENGTH",
            format!("{C}.evidence_sha256"),
            "a SHA-256 digest is 32 bytes",
        ));
    }
    if consent.written && (consent.evidence_sha256.is_empty() || consent.evidence_reference.is_empty()) {
        return Err(invalid(
            "EVIDENCE_REQUIRED",
            format!("{C}.evidence_sha256"),
            "a written consent needs the signed document's SHA-256 and storage reference",
        ));
    }
    if consent.information_given.trim().is_empty() {
        return Err(invalid(
            "INFORMATION_REQUIRED",
            format!("{C}.information_given"),
            "record what the person was told (purpose, institutions, information, right to revoke)",
        ));
    }
    if consent.information_given.chars().count() > MAX_INFORMATION {
        return Err(invalid(
            "INFORMATION_TOO_LONG",
            format!("{C}.information_given"),
            format!("at most {MAX_INFORMATION} characters"),
        ));
    }
    if !consent.representative.is_empty() && !is_identifier(&consent.representative) {
        return Err(invalid(
            "REPRESENTATIVE_INVALID",
            format!("{C}.representative"),
            "a capacity such as legal_guardian (lowercase letters and _), never a name",
        ));
    }
    if !LANGUAGES.contains(&consent.language.as_str()) {
        return Err(invalid(
            "LANGUAGE_UNKNOWN",
            format!("{C}.language"),
            format!("one of {}", LANGUAGES.join(", ")),
        ));
    }
    Ok(())
}

/// Checks a revocation channel.
pub fn check_channel(channel: &str) -> Result<(), Invalid> {
    if CHANNELS.contains(&channel) {
        Ok(())
    } else {
        Err(invalid(
            "CHANNEL_UNKNOWN",
            "channel",
            format!("one of {}", CHANNELS.join(", ")),
        ))
    }
}

/// A relationship capacity: 1–64 lowercase letters, digits and `_`, starting with a letter.
pub fn check_capacity(capacity: &str) -> Result<(), Invalid> {
    if is_identifier(capacity) {
        Ok(())
    } else {
        Err(invalid(
            "CAPACITY_INVALID",
            "capacity",
            "1–64 lowercase letters, digits and _, e.g. registered_job_seeker",
        ))
    }
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Known;
    impl Vocabulary for Known {
        fn knows_institution(&self, id: &str) -> bool {
            ["ORP-VS", "AI-VS", "AS-VS"].contains(&id)
        }
        fn knows_category(&self, id: &str) -> bool {
            ["identity", "job_search", "health_limitations"].contains(&id)
        }
        fn knows_purpose(&self, id: &str) -> bool {
            ["integration", "benefit_determination"].contains(&id)
        }
    }

    const DAY: Micros = 24 * 3600 * 1_000_000;

    /// A change that makes a declaration invalid.
    type Mutation = Box<dyn Fn(&mut Consent)>;

    pub(crate) fn sample() -> Consent {
        let set = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        Consent {
            id: String::new(),
            version: 0,
            recorded_by: "ORP-VS".into(),
            recorded_by_user: "anna".into(),
            recorded_at: 0,
            institutions: set(&["ORP-VS", "AI-VS"]),
            directions: [("ORP-VS".to_owned(), "AI-VS".to_owned())].into(),
            categories: set(&["identity", "job_search"]),
            purposes: set(&["integration"]),
            valid_from: 100 * DAY,
            valid_until: 465 * DAY,
            written: true,
            evidence_sha256: vec![7; 32],
            evidence_reference: "dms://orp-vs/2026/0001".into(),
            recurrence: Recurrence::Recurring,
            onward_transfer_allowed: false,
            information_given: "Purpose, institutions, data and the right to revoke explained orally.".into(),
            representative: String::new(),
            language: "fr".into(),
            revocation: None,
        }
    }

    fn question<'a>(categories: &'a [String], at: Micros) -> Question<'a> {
        Question {
            sender: "ORP-VS",
            recipient: "AI-VS",
            categories,
            purpose: "integration",
            at,
        }
    }

    #[test]
    fn a_consent_covers_exactly_its_scope_and_period() {
        let c = sample();
        let cats = vec!["job_search".to_owned(), "health_limitations".to_owned()];
        assert_eq!(
            answer(&c, &question(&cats, 200 * DAY)),
            Answer::Covers {
                covered: vec!["job_search".into()],
                uncovered: vec!["health_limitations".into()]
            }
        );
        let reasons = |q: &Question<'_>| match answer(&c, q) {
            Answer::DoesNotCover(r) => r,
            other => panic!("expected not covered: {other:?}"),
        };
        assert_eq!(reasons(&question(&cats, 466 * DAY)), vec!["EXPIRED"]);
        assert_eq!(reasons(&question(&cats, 99 * DAY)), vec!["NOT_YET_VALID"]);
        let only_health = vec!["health_limitations".to_owned()];
        assert_eq!(
            reasons(&question(&only_health, 200 * DAY)),
            vec!["CATEGORIES_NOT_COVERED"]
        );
        let mut q = question(&cats, 200 * DAY);
        q.purpose = "benefit_determination";
        assert_eq!(reasons(&q), vec!["PURPOSE_NOT_COVERED"]);
        let mut q = question(&cats, 200 * DAY);
        q.recipient = "AS-VS";
        assert_eq!(reasons(&q), vec!["RECIPIENT_NOT_COVERED"]);
        // The reverse direction was not consented to.
        let mut q = question(&cats, 200 * DAY);
        (q.sender, q.recipient) = ("AI-VS", "ORP-VS");
        assert_eq!(reasons(&q), vec!["DIRECTION_NOT_COVERED"]);
        let mut revoked = c.clone();
        revoked.revocation = Some(Revocation {
            at: 150 * DAY,
            institution: "AI-VS".into(),
            user: "bob".into(),
            channel: "letter".into(),
        });
        assert_eq!(
            answer(&revoked, &question(&cats, 120 * DAY)),
            Answer::DoesNotCover(vec!["REVOKED"]),
            "a revocation holds for every lookup after it, whatever date is asked about"
        );
    }

    #[test]
    fn every_malformed_declaration_is_refused_with_its_code_and_field() {
        assert_eq!(check(&sample(), &Known), Ok(()));
        let cases: Vec<(&str, &str, Mutation)> = vec![
            (
                "SCOPE_EMPTY",
                "consent.institutions",
                Box::new(|c| {
                    c.institutions.remove("AI-VS");
                }),
            ),
            (
                "UNKNOWN_INSTITUTION",
                "consent.institutions",
                Box::new(|c| {
                    c.institutions.insert("AI".into());
                }),
            ),
            (
                "RECORDER_NOT_COVERED",
                "consent.institutions",
                Box::new(|c| c.recorded_by = "AS-VS".into()),
            ),
            ("SCOPE_EMPTY", "consent.directions", Box::new(|c| c.directions.clear())),
            (
                "DIRECTION_TO_SELF",
                "consent.directions",
                Box::new(|c| {
                    c.directions.insert(("AI-VS".into(), "AI-VS".into()));
                }),
            ),
            (
                "DIRECTION_OUTSIDE_SCOPE",
                "consent.directions",
                Box::new(|c| {
                    c.directions.insert(("AI-VS".into(), "AS-VS".into()));
                }),
            ),
            ("SCOPE_EMPTY", "consent.categories", Box::new(|c| c.categories.clear())),
            (
                "UNKNOWN_CATEGORY",
                "consent.categories",
                Box::new(|c| {
                    c.categories.insert("everything".into());
                }),
            ),
            ("SCOPE_EMPTY", "consent.purposes", Box::new(|c| c.purposes.clear())),
            (
                "UNKNOWN_PURPOSE",
                "consent.purposes",
                Box::new(|c| {
                    c.purposes.insert("marketing".into());
                }),
            ),
            (
                "VALIDITY_INVERTED",
                "consent.valid_until",
                Box::new(|c| c.valid_until = c.valid_from - 1),
            ),
            (
                "VALIDITY_TOO_LONG",
                "consent.valid_until",
                Box::new(|c| c.valid_until = c.valid_from + 6 * 366 * DAY),
            ),
            (
                "EVIDENCE_REFERENCE_TOO_LONG",
                "consent.evidence_reference",
                Box::new(|c| {
                    c.evidence_reference = "x".repeat(257);
                }),
            ),
            (
                "EVIDENCE_HASH_LENGTH",
                "consent.evidence_sha256",
                Box::new(|c| c.evidence_sha256 = vec![1; 20]),
            ),
            (
                "EVIDENCE_REQUIRED",
                "consent.evidence_sha256",
                Box::new(|c| c.evidence_sha256.clear()),
            ),
            (
                "INFORMATION_REQUIRED",
                "consent.information_given",
                Box::new(|c| c.information_given = " ".into()),
            ),
            (
                "INFORMATION_TOO_LONG",
                "consent.information_given",
                Box::new(|c| {
                    c.information_given = "i".repeat(2_001);
                }),
            ),
            (
                "REPRESENTATIVE_INVALID",
                "consent.representative",
                Box::new(|c| {
                    c.representative = "Jean Dupont".into();
                }),
            ),
            (
                "LANGUAGE_UNKNOWN",
                "consent.language",
                Box::new(|c| c.language = "es".into()),
            ),
        ];
        for (code, field, change) in cases {
            let mut c = sample();
            change(&mut c);
            let err = check(&c, &Known).expect_err(code);
            assert_eq!((err.code, err.field.as_str()), (code, field), "{}", err.message);
        }
        // An oral consent needs no document.
        let mut oral = sample();
        oral.written = false;
        oral.evidence_sha256.clear();
        oral.evidence_reference.clear();
        assert_eq!(check(&oral, &Known), Ok(()));
    }

    #[test]
    fn channels_and_capacities_are_checked() {
        assert!(check_channel("letter").is_ok());
        assert_eq!(check_channel("pigeon").unwrap_err().code, "CHANNEL_UNKNOWN");
        assert!(check_capacity("registered_job_seeker").is_ok());
        for bad in ["", "Registered", "job seeker", "_x", &"a".repeat(65)] {
            assert_eq!(check_capacity(bad).unwrap_err().code, "CAPACITY_INVALID", "{bad:?}");
        }
    }
}
