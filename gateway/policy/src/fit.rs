//! Whether a rulebook fits the network it runs in: every institution it
//! describes is a registry member of the same type, and its categories and the
//! contract's field categories agree (every category carried by some field,
//! every field's category declared). Pure: the caller reads the files and the
//! registry, this decides.

use cii_types::exchange::Disagreement;
use cii_types::{InstitutionId, InstitutionType};

use crate::rulebook::{Diagnostic, Rulebook, Source, with_base};

/// The rulebook cannot run in this network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FitError {
    /// The rulebook has errors.
    #[error("the rulebook has {} error(s):\n{}", .0.len(), .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    /// The rulebook and the contract's field categories disagree.
    #[error("the rulebook and the contract's field categories disagree:\n{}", .0.iter().map(|d| format!("  error[{}]: {}", d.code, d.message)).collect::<Vec<_>>().join("\n"))]
    Contract(Vec<Disagreement>),
    /// The rulebook and the registry disagree about an institution.
    #[error("rulebook and registry disagree about institution {id}: {problem}")]
    Registry {
        /// The institution id.
        id: String,
        /// How.
        problem: String,
    },
}

/// The sources to load: the files of a rulebook directory, as (file name, text) sorted by name
/// (with the federal base if they extend it), or the built-in federal rulebook when there is
/// no directory.
pub fn sources(files: Option<Vec<(String, String)>>) -> Vec<Source> {
    match files {
        Some(files) => with_base(files.into_iter().map(|(name, text)| Source { name, text }).collect()),
        None => crate::federal_sources(),
    }
}

/// Loads and checks the rulebook of `files` (see [`sources`]) as of `today`.
pub fn load(files: Option<Vec<(String, String)>>, today: time::Date) -> Result<Rulebook, FitError> {
    crate::load(&sources(files), today).map_err(FitError::Invalid)
}

/// Every institution the rulebook describes must be a member, with the same type.
pub fn check_agreement(
    rulebook: &Rulebook,
    member: impl Fn(&InstitutionId) -> Option<InstitutionType>,
) -> Result<(), FitError> {
    for (id, facts) in &rulebook.institutions {
        let problem = match member(id) {
            None => "not in the registry".to_owned(),
            Some(kind) if kind != facts.kind => format!("registry says {kind}, rulebook says {}", facts.kind),
            Some(_) => continue,
        };
        return Err(FitError::Registry {
            id: id.to_string(),
            problem,
        });
    }
    Ok(())
}

/// Every registry member's type must be one the rulebook declares: a member of an
/// undeclared type could never be decided for, and its transfers would all be refused
/// with a reason no jurist wrote.
pub fn check_types<'a>(
    rulebook: &Rulebook,
    members: impl IntoIterator<Item = (&'a InstitutionId, InstitutionType)>,
) -> Result<(), FitError> {
    for (id, kind) in members {
        if !rulebook.types.contains_key(&kind) {
            return Err(FitError::Registry {
                id: id.to_string(),
                problem: format!("its type {kind} is not an institution type the rulebook declares"),
            });
        }
    }
    Ok(())
}

/// The rulebook's categories against the contract's: every category is carried by some field,
/// every field's category is in the rulebook (see `cii_types::exchange::disagreements`).
pub fn contract_disagreements(rulebook: &Rulebook) -> Vec<Disagreement> {
    let fields = match cii_types::exchange::Catalogue::load() {
        Ok(catalogue) => catalogue.field_categories(),
        Err(e) => {
            return vec![Disagreement {
                code: e.code(),
                message: e.to_string(),
            }];
        }
    };
    let categories = rulebook.categories.iter().map(|c| c.id.clone()).collect();
    cii_types::exchange::disagreements(&fields, &categories)
}

/// [`contract_disagreements`] as a result: a gateway refuses to run a rulebook its contract cannot carry.
pub fn check_contract(rulebook: &Rulebook) -> Result<(), FitError> {
    let found = contract_disagreements(rulebook);
    if found.is_empty() {
        Ok(())
    } else {
        Err(FitError::Contract(found))
    }
}
