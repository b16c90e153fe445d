//! The fixed words of the rulebook: triggers, built-in conditions, attesters,
//! owners, statuses, regimes, languages. Everything else — institution types,
//! facts, conditions built from facts and built-ins, obligations, categories,
//! purposes — is declared in the rulebook files; these are fixed because the
//! engine gives each a precise meaning in code.

use crate::LoadError;

/// Declares a string-named enum with `ALL`, `as_str` and `parse`.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name used in rulebook and scenario files.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// Parses a name; an unknown one is an error naming it and the accepted values.
            pub fn parse(what: &str, s: &str) -> Result<$name, LoadError> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| LoadError::Unknown {
                    what: what.to_owned(),
                    value: s.to_owned(),
                    expected: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// How an exchange was started; it selects the candidate bases.
    Trigger {
        /// A written and reasoned request of the recipient, in the individual case.
        WrittenRequest = "written_request",
        /// A report the sender makes on its own initiative.
        SpontaneousReport = "spontaneous_report",
        /// A report the law obliges the sender to make.
        MandatoryReport = "mandatory_report",
        /// Case-by-case access to the sender's files.
        CaseAccess = "case_access",
        /// Mutual exchange between two institutions, orally if need be.
        BilateralExchange = "bilateral_exchange",
    }
}

named_enum! {
    /// A condition the engine evaluates with code, because a fact alone cannot
    /// say it (a count, a registry lookup, a rulebook attestation, a filter).
    /// Rulebooks name them in `[[condition]]` entries (`builtin = "consent"`);
    /// every other condition is a fact or a combination of conditions.
    Builtin {
        /// In the individual case: one person (`persons == 1`) and a case or request reference given.
        CaseByCase = "case_by_case",
        /// A consent found in the registry covers the purpose and the released categories.
        Consent = "consent",
        /// As `consent`, and the consent was given in writing.
        WrittenConsent = "written_consent",
        /// The recipient grants reciprocity to the sender's type (rulebook attestation; fact
        /// `recipient_grants_reciprocity` stands in for it in scenarios).
        Reciprocity = "reciprocity",
        /// Every party under cantonal data-protection law has a formal-law release (rulebook
        /// attestation; fact `cantonal_release` stands in for it).
        CantonalRelease = "cantonal_release",
        /// The recipient has a formal-law release, whatever its data-protection regime (LAI 68bis
        /// al. 3: "pour autant que la loi applicable prévoie une base légale déliant …").
        RecipientFormalRelease = "recipient_formal_release",
        /// Never releases a category marked `medical`.
        NoMedicalData = "no_medical_data",
        /// Never releases a category marked `sensitive` (nLPD art. 5 let. c).
        NoSensitiveData = "no_sensitive_data",
        /// A federal act imposes on the discloser the duty to disclose to the recipient: a
        /// `[[federal_duty]]` row covers the pair and the trigger (LACI 97a al. 1 let. b,
        /// LAVS 50a al. 1 let. b, LAA 97 al. 1 let. b, LSE 34a al. 1 let. a).
        FederalDuty = "federal_duty",
    }
}

impl Builtin {
    /// Whether the builtin narrows the released categories (rather than only holding or not).
    /// Such a condition cannot sit inside `any_of`: "either" has no meaning for a filter.
    pub fn filters(self) -> bool {
        matches!(
            self,
            Builtin::Consent | Builtin::WrittenConsent | Builtin::NoMedicalData | Builtin::NoSensitiveData
        )
    }
}

named_enum! {
    /// Who may attest a fact. The gateway takes a fact from a request only if
    /// the caller is that party; `network` facts come from the directory, the
    /// registry or the rulebook, never from a request.
    Attester {
        /// The institution that submits the transfer (the discloser for a push, the requester for a pull).
        Sender = "sender",
        /// The institution that receives the data.
        Recipient = "recipient",
        /// The institution that holds and discloses the data: the weighing the law leaves to it
        /// ("peuvent", "selon les cas"). In a pull, only the holder's reviewer attests it.
        Discloser = "discloser",
        /// The network: the reference directory, the registry or the rulebook.
        Network = "network",
    }
}

named_enum! {
    /// Who must fulfil an obligation.
    Owner {
        /// The institution that discloses.
        Sender = "sender",
        /// The institution that receives.
        Recipient = "recipient",
    }
}

named_enum! {
    /// How sure the research behind a basis is (legal.md markers).
    Status {
        /// `[V]`: the cited text directly supports it.
        Verified = "verified",
        /// `[I]`: an inference jurists must confirm.
        Inference = "inference",
        /// `[U]`: open; such bases are inactive.
        Open = "open",
    }
}

named_enum! {
    /// Which data-protection law governs an institution.
    Regime {
        /// Federal nLPD.
        Federal = "federal",
        /// Cantonal data-protection law.
        Cantonal = "cantonal",
    }
}

named_enum! {
    /// nLPD sensitivity of a category.
    Sensitivity {
        /// Ordinary personal data.
        Ordinary = "ordinary",
        /// Sensitive personal data (nLPD art. 5 let. c).
        Sensitive = "sensitive",
    }
}

named_enum! {
    /// A language jurists and DPOs read.
    Lang {
        /// French.
        Fr = "fr",
        /// German.
        De = "de",
        /// English.
        En = "en",
    }
}
