//! The fixed vocabulary of the rulebook: triggers, conditions, facts,
//! obligations, statuses, languages. Categories and purposes are open-ended
//! (declared in the rulebook); these are not, because the engine gives each a
//! precise meaning.

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
    /// A condition of a legal basis. Each has exactly one meaning, evaluated by
    /// `decide` (see `Condition::meaning`).
    Condition {
        /// One person, never bulk: `persons == 1`.
        CaseByCase = "case_by_case",
        /// A written, reasoned request is present (fact `written_request`).
        WrittenRequest = "written_request",
        /// A consent found in the registry covers the purpose and the released categories.
        Consent = "consent",
        /// As `consent`, and the consent was given in writing.
        WrittenConsent = "written_consent",
        /// The recipient has an active relationship with the person (reference directory).
        RecipientServesPerson = "recipient_serves_person",
        /// The recipient grants reciprocity to the sender's type (rulebook attestation).
        Reciprocity = "reciprocity",
        /// Every cantonal party of the transfer has a cantonal formal-law release (rulebook attestation).
        CantonalRelease = "cantonal_release",
        /// The sender attests that the competent cost bearer is not yet clear.
        CostBearerUnclear = "cost_bearer_unclear",
        /// The sender attests that no overriding private interest opposes the disclosure.
        NoOverridingPrivateInterest = "no_overriding_private_interest",
        /// The sender attests that the person was informed before the report.
        PersonInformedBefore = "person_informed_before",
        /// Never releases a category marked `medical`.
        NoMedicalData = "no_medical_data",
        /// The person is a recognised refugee or provisionally admitted (fact).
        RefugeeOrProvisionallyAdmitted = "refugee_or_provisionally_admitted",
        /// The person's employability was established by an assessment (fact).
        EmployabilityEstablished = "employability_established",
        /// The person receives social assistance (fact).
        ReceivesSocialAid = "receives_social_aid",
        /// The person receives annual supplementary benefits (fact).
        ReceivesPc = "receives_pc",
    }
}

named_enum! {
    /// A fact given with a transfer. In live traffic the gateway derives
    /// `recipient_serves_person` from the directory and reciprocity and
    /// cantonal release from the rulebook; in scenarios and `explain`, facts
    /// stand in for them.
    Fact {
        /// A written, reasoned request is present.
        WrittenRequest = "written_request",
        /// The recipient serves the person (stands in for the reference directory).
        RecipientServesPerson = "recipient_serves_person",
        /// The recipient grants reciprocity (stands in for a rulebook attestation).
        RecipientGrantsReciprocity = "recipient_grants_reciprocity",
        /// The cantonal parties have a formal-law release (stands in for rulebook attestations).
        CantonalRelease = "cantonal_release",
        /// Sender attestation: the cost bearer is not yet clear.
        CostBearerUnclear = "cost_bearer_unclear",
        /// Sender attestation: no overriding private interest.
        NoOverridingPrivateInterest = "no_overriding_private_interest",
        /// Sender attestation: the person was informed beforehand.
        PersonInformedBefore = "person_informed_before",
        /// The person is a recognised refugee or provisionally admitted.
        RefugeeOrProvisionallyAdmitted = "refugee_or_provisionally_admitted",
        /// Employability established.
        EmployabilityEstablished = "employability_established",
        /// The person receives social assistance.
        ReceivesSocialAid = "receives_social_aid",
        /// The person receives supplementary benefits.
        ReceivesPc = "receives_pc",
    }
}

named_enum! {
    /// A duty a permit creates.
    ObligationKind {
        /// Inform the person afterwards of the exchange and its content (LACI 85f al. 4, LAI 68bis al. 4).
        InformPersonAfter = "inform_person_after",
        /// Send a copy of the decision (LAI 68bis al. 5).
        SendDecisionCopy = "send_decision_copy",
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

impl Condition {
    /// The fact that stands for this condition, if it is a plain fact.
    pub fn fact(self) -> Option<Fact> {
        Some(match self {
            Condition::WrittenRequest => Fact::WrittenRequest,
            Condition::RecipientServesPerson => Fact::RecipientServesPerson,
            Condition::CostBearerUnclear => Fact::CostBearerUnclear,
            Condition::NoOverridingPrivateInterest => Fact::NoOverridingPrivateInterest,
            Condition::PersonInformedBefore => Fact::PersonInformedBefore,
            Condition::RefugeeOrProvisionallyAdmitted => Fact::RefugeeOrProvisionallyAdmitted,
            Condition::EmployabilityEstablished => Fact::EmployabilityEstablished,
            Condition::ReceivesSocialAid => Fact::ReceivesSocialAid,
            Condition::ReceivesPc => Fact::ReceivesPc,
            Condition::CaseByCase
            | Condition::Consent
            | Condition::WrittenConsent
            | Condition::Reciprocity
            | Condition::CantonalRelease
            | Condition::NoMedicalData => return None,
        })
    }
}
