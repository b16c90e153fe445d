//! The exchange catalogue as data: which field of which message carries
//! which data category (the contract's `(cii.common.v1.category)` option),
//! and the one generic filter that keeps a payload's released fields and
//! drops the others. There is no per-type filtering code anywhere: a new
//! exchange type is a new message in `catalogue.proto`, nothing else.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, MessageDescriptor, Value};

/// The package of the exchange messages.
pub const PACKAGE: &str = "cii.exchange.v1";
/// The category option.
const CATEGORY_OPTION: &str = "cii.common.v1.category";
/// The prefix of an `Any` type URL.
const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// A payload could not be filtered. Messages name types and fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The contract's descriptors are unusable (a build problem).
    #[error("the contract's descriptors are unusable: {0}")]
    Descriptors(String),
    /// The type URL names no exchange message.
    #[error("{0} is not an exchange type of the catalogue")]
    UnknownType(String),
    /// The bytes are not a valid message of the type.
    #[error("the payload is not a valid {0}")]
    Invalid(String),
    /// The payload has fields the contract does not define: they cannot be categorised.
    #[error("the payload of type {0} has fields the contract does not define")]
    UnknownField(String),
    /// A field of the payload has no category (the contract test prevents this).
    #[error("field {0} declares no data category")]
    Uncategorised(String),
}

impl ExchangeError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ExchangeError::Descriptors(_) => "CONTRACT_DESCRIPTORS",
            ExchangeError::UnknownType(_) => "EXCHANGE_TYPE_UNKNOWN",
            ExchangeError::Invalid(_) => "PAYLOAD_INVALID",
            ExchangeError::UnknownField(_) => "PAYLOAD_UNKNOWN_FIELD",
            ExchangeError::Uncategorised(_) => "FIELD_UNCATEGORISED",
        }
    }
}

/// A payload after filtering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The payload with only released fields, encoded.
    pub bytes: Vec<u8>,
    /// Categories of the fields kept.
    pub released: BTreeSet<String>,
    /// Categories of the fields present and removed.
    pub withheld: BTreeSet<String>,
}

/// The catalogue, read from the contract's descriptors.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pool: DescriptorPool,
    category: ExtensionDescriptor,
}

impl Catalogue {
    /// Reads the contract compiled into `cii-proto`.
    pub fn load() -> Result<Catalogue, ExchangeError> {
        let pool = DescriptorPool::decode(cii_proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| ExchangeError::Descriptors(e.to_string()))?;
        let category = pool
            .get_extension_by_name(CATEGORY_OPTION)
            .ok_or_else(|| ExchangeError::Descriptors(format!("no extension {CATEGORY_OPTION}")))?;
        Ok(Catalogue { pool, category })
    }

    /// The category a field declares, if any.
    pub fn category_of(&self, field: &FieldDescriptor) -> Option<String> {
        let options = field.options();
        if !options.has_extension(&self.category) {
            return None;
        }
        options
            .get_extension(&self.category)
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
    }

    /// The exchange messages, by full name.
    pub fn exchange_types(&self) -> Vec<MessageDescriptor> {
        self.pool
            .all_messages()
            .filter(|m| m.package_name() == PACKAGE && m.fields().any(|f| self.category_of(&f).is_some()))
            .collect()
    }

    /// Every field of the whole contract that declares a category: full field name → category.
    pub fn field_categories(&self) -> BTreeMap<String, String> {
        self.pool
            .all_messages()
            .flat_map(|m| m.fields().collect::<Vec<_>>())
            .filter_map(|f| self.category_of(&f).map(|c| (f.full_name().to_owned(), c)))
            .collect()
    }

    /// The exchange message named by an `Any` type URL.
    pub fn exchange_type(&self, type_url: &str) -> Result<MessageDescriptor, ExchangeError> {
        let name = type_url.strip_prefix(TYPE_URL_PREFIX).unwrap_or(type_url);
        self.pool
            .get_message_by_name(name)
            .filter(|m| m.package_name() == PACKAGE)
            .ok_or_else(|| ExchangeError::UnknownType(name.to_owned()))
    }

    /// Keeps the fields of `payload` (of the exchange type `type_url`) whose category
    /// `released` accepts and drops the others. A dropped field is absent from the
    /// result, not present-but-empty. Unknown fields anywhere refuse the payload.
    pub fn filter(
        &self,
        type_url: &str,
        payload: &[u8],
        released: impl Fn(&str) -> bool,
    ) -> Result<Filtered, ExchangeError> {
        let descriptor = self.exchange_type(type_url)?;
        let name = descriptor.full_name().to_owned();
        let mut message =
            DynamicMessage::decode(descriptor.clone(), payload).map_err(|_| ExchangeError::Invalid(name.clone()))?;
        if has_unknown_fields(&message) {
            return Err(ExchangeError::UnknownField(name));
        }
        let mut kept = BTreeSet::new();
        let mut withheld = BTreeSet::new();
        let present: Vec<FieldDescriptor> = message.fields().map(|(f, _)| f).collect();
        for field in present {
            let category = self
                .category_of(&field)
                .ok_or_else(|| ExchangeError::Uncategorised(field.full_name().to_owned()))?;
            if released(&category) {
                kept.insert(category);
            } else {
                message.clear_field(&field);
                withheld.insert(category);
            }
        }
        Ok(Filtered {
            bytes: message.encode_to_vec(),
            released: kept,
            withheld,
        })
    }
}

impl Catalogue {
    /// The payload cut into one message per category present, ordered by category: each
    /// holds only that category's fields (categories are declared on the exchange message's
    /// own fields, so the parts are disjoint and their encodings, concatenated, decode to the
    /// payload). The checks of [`Catalogue::filter`] apply.
    pub fn split(&self, type_url: &str, payload: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ExchangeError> {
        let present = self.filter(type_url, payload, |_| true)?;
        present
            .released
            .into_iter()
            .map(|category| {
                let part = self.filter(type_url, payload, |c| c == category)?;
                Ok((category, part.bytes))
            })
            .collect()
    }

    /// The parts of one payload joined back into it, encoded as a message of its type is
    /// (fields in number order), whatever order the parts came in.
    pub fn join(&self, type_url: &str, parts: &[Vec<u8>]) -> Result<Vec<u8>, ExchangeError> {
        let descriptor = self.exchange_type(type_url)?;
        let name = descriptor.full_name().to_owned();
        // Disjoint fields of one message: their encodings concatenated decode to the whole.
        let message =
            DynamicMessage::decode(descriptor, parts.concat().as_slice()).map_err(|_| ExchangeError::Invalid(name))?;
        Ok(message.encode_to_vec())
    }

    /// Checks one opened part: a valid message of the exchange type, no unknown field, and
    /// every field present of the category `label` (at least one). A part carrying another
    /// category's field was mislabelled by its sender.
    pub fn check_part(&self, type_url: &str, label: &str, part: &[u8]) -> Result<(), PartError> {
        let filtered = self
            .filter(type_url, part, |c| c == label)
            .map_err(PartError::Exchange)?;
        if !filtered.withheld.is_empty() {
            return Err(PartError::Mislabelled {
                label: label.to_owned(),
                carries: filtered.withheld.into_iter().collect(),
            });
        }
        if filtered.released.is_empty() {
            return Err(PartError::Empty(label.to_owned()));
        }
        Ok(())
    }
}

/// An opened part that is not what its label says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartError {
    /// Not a valid message of its type, or unknown fields.
    #[error(transparent)]
    Exchange(ExchangeError),
    /// It carries fields of other categories than its label.
    #[error("the part labelled {label} carries fields of other categories: {}", carries.join(", "))]
    Mislabelled {
        /// Its label.
        label: String,
        /// The other categories it carries.
        carries: Vec<String>,
    },
    /// It carries no field.
    #[error("the part labelled {0} carries no field")]
    Empty(String),
}

impl PartError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            PartError::Exchange(e) => e.code(),
            PartError::Mislabelled { .. } => "SEALED_PART_MISLABELLED",
            PartError::Empty(_) => "SEALED_PART_EMPTY",
        }
    }
}

fn has_unknown_fields(message: &DynamicMessage) -> bool {
    fn value_has(value: &Value) -> bool {
        match value {
            Value::Message(m) => has_unknown_fields(m),
            Value::List(items) => items.iter().any(value_has),
            Value::Map(entries) => entries.values().any(value_has),
            _ => false,
        }
    }
    message.unknown_fields().next().is_some() || message.fields().any(|(_, v)| value_has(v))
}

/// A disagreement between the rulebook's categories and the contract's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// `CATEGORY_WITHOUT_FIELD` or `FIELD_CATEGORY_UNKNOWN`.
    pub code: &'static str,
    /// What, in a sentence.
    pub message: String,
}

/// Compares the rulebook's categories with the categories the contract's fields declare:
/// every rulebook category must be carried by some field, every field category must be
/// in the rulebook.
pub fn disagreements(fields: &BTreeMap<String, String>, rulebook: &BTreeSet<String>) -> Vec<Disagreement> {
    let used: BTreeSet<&String> = fields.values().collect();
    let mut found: Vec<Disagreement> = rulebook
        .iter()
        .filter(|c| !used.contains(c))
        .map(|c| Disagreement {
            code: "CATEGORY_WITHOUT_FIELD",
            message: format!("the rulebook's category {c} is carried by no field of the contract"),
        })
        .collect();
    found.extend(
        fields
            .iter()
            .filter(|(_, c)| !rulebook.contains(*c))
            .map(|(f, c)| Disagreement {
                code: "FIELD_CATEGORY_UNKNOWN",
                message: format!("field {f} declares category {c}, which the rulebook does not define"),
            }),
    );
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use cii_proto::exchange::{ContactDetails, EarlyDetectionReport, PersonDetails};

    const REPORT: &str = "type.googleapis.com/cii.exchange.v1.EarlyDetectionReport";

    fn report() -> EarlyDetectionReport {
        EarlyDetectionReport {
            person: Some(PersonDetails {
                family_name: "Muster".into(),
                given_names: "Anna".into(),
                birth_date: "1980-02-03".into(),
            }),
            contact: Some(ContactDetails {
                address: "Rue du Rhône 1, 1950 Sion".into(),
                ..ContactDetails::default()
            }),
            employment_situation: "on sick leave since March".into(),
            health_limitations: "back pain, cannot lift".into(),
            medical_reports: vec!["report Dr X, 2026-09-01".into()],
            ..EarlyDetectionReport::default()
        }
    }

    #[test]
    fn every_exchange_field_declares_a_category() {
        let catalogue = Catalogue::load().unwrap();
        let types = catalogue.exchange_types();
        assert!(types.len() >= 12, "{}", types.len());
        for message in types {
            for field in message.fields() {
                assert!(
                    catalogue.category_of(&field).is_some(),
                    "{} has no category",
                    field.full_name()
                );
            }
        }
        let fields = catalogue.field_categories();
        assert_eq!(
            fields
                .get("cii.gateway.v1.TransferRequest.identity")
                .map(String::as_str),
            Some("identity.avs")
        );
    }

    #[test]
    fn withheld_fields_are_absent_and_released_ones_intact() {
        let catalogue = Catalogue::load().unwrap();
        let bytes = report().encode_to_vec();
        let released = ["identity", "contact", "employment_status", "health_limitations"];
        let filtered = catalogue.filter(REPORT, &bytes, |c| released.contains(&c)).unwrap();
        assert_eq!(
            filtered.withheld,
            BTreeSet::from(["medical_reports".to_owned()]),
            "only categories present are reported"
        );
        assert_eq!(filtered.released.len(), 4);
        let out = EarlyDetectionReport::decode(filtered.bytes.as_slice()).unwrap();
        assert!(out.medical_reports.is_empty());
        let mut expected = report();
        expected.medical_reports.clear();
        assert_eq!(out, expected);
        // Withheld means absent on the wire too: field 5 is not encoded at all.
        let field5_tag = (5 << 3) | 2;
        assert!(!filtered.bytes.contains(&field5_tag));
        // Nothing released: nothing left.
        let none = catalogue.filter(REPORT, &bytes, |_| false).unwrap();
        assert!(none.bytes.is_empty());
    }

    #[test]
    fn a_payload_split_by_category_joins_back_and_each_part_is_checked_against_its_label() {
        let catalogue = Catalogue::load().unwrap();
        let report = report();
        let bytes = report.encode_to_vec();
        let parts = catalogue.split(REPORT, &bytes).unwrap();
        let labels: Vec<&str> = parts.iter().map(|(c, _)| c.as_str()).collect();
        let mut sorted = labels.clone();
        sorted.sort_unstable();
        assert_eq!(labels, sorted, "ordered by category");
        assert!(labels.len() > 1, "{labels:?}");
        for (label, part) in &parts {
            catalogue.check_part(REPORT, label, part).unwrap();
        }
        let mut shuffled: Vec<Vec<u8>> = parts.iter().map(|(_, p)| p.clone()).collect();
        shuffled.reverse();
        assert_eq!(
            catalogue.join(REPORT, &shuffled).unwrap(),
            bytes,
            "the payload's own bytes"
        );
        let (first, second) = (&parts[0], &parts[1]);
        let err = catalogue.check_part(REPORT, &first.0, &second.1).unwrap_err();
        assert_eq!(err.code(), "SEALED_PART_MISLABELLED", "{err}");
        let both: Vec<u8> = [first.1.clone(), second.1.clone()].concat();
        let err = catalogue.check_part(REPORT, &first.0, &both).unwrap_err();
        assert_eq!(err.code(), "SEALED_PART_MISLABELLED");
        assert!(!err.to_string().contains("Muster"), "no value in the error: {err}");
        assert_eq!(
            catalogue.check_part(REPORT, &first.0, &[]).unwrap_err().code(),
            "SEALED_PART_EMPTY"
        );
        assert_eq!(
            catalogue
                .check_part(REPORT, &first.0, &[0xff, 0xff])
                .unwrap_err()
                .code(),
            "PAYLOAD_INVALID"
        );
    }

    #[test]
    fn payloads_that_cannot_be_categorised_are_refused() {
        let catalogue = Catalogue::load().unwrap();
        let mut bytes = report().encode_to_vec();
        // A smuggled field 99 (length-delimited).
        bytes.extend_from_slice(&[(99 << 3 | 2) as u8 & 0x7f | 0x80, 6, 3, b'a', b'b', b'c']);
        let err = catalogue.filter(REPORT, &bytes, |_| true).unwrap_err();
        assert_eq!(err.code(), "PAYLOAD_UNKNOWN_FIELD");
        // Also inside a nested message.
        let mut nested = report();
        nested.person = None;
        let mut bytes = nested.encode_to_vec();
        let person = [0xfa, 0x01, 1, b'x']; // field 31 of PersonDetails, 1 byte
        bytes.extend_from_slice(&[(1 << 3) | 2, person.len() as u8]);
        bytes.extend_from_slice(&person);
        assert_eq!(
            catalogue.filter(REPORT, &bytes, |_| true).unwrap_err().code(),
            "PAYLOAD_UNKNOWN_FIELD"
        );
        assert_eq!(
            catalogue.filter(REPORT, &[0xff, 0xff], |_| true).unwrap_err().code(),
            "PAYLOAD_INVALID"
        );
        for url in [
            "type.googleapis.com/cii.gateway.v1.TransferRequest",
            "type.googleapis.com/x.Y",
        ] {
            assert_eq!(
                catalogue.filter(url, &[], |_| true).unwrap_err().code(),
                "EXCHANGE_TYPE_UNKNOWN"
            );
        }
    }

    #[test]
    fn disagreements_name_both_directions() {
        let fields = BTreeMap::from([
            ("a.B.c".to_owned(), "identity".to_owned()),
            ("a.B.d".to_owned(), "secret_sauce".to_owned()),
        ]);
        let rulebook = BTreeSet::from(["identity".to_owned(), "medical_reports".to_owned()]);
        let found = disagreements(&fields, &rulebook);
        let codes: Vec<&str> = found.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec!["CATEGORY_WITHOUT_FIELD", "FIELD_CATEGORY_UNKNOWN"]);
        assert!(found[0].message.contains("medical_reports"));
        assert!(found[1].message.contains("a.B.d"));
    }
}
