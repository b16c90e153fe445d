//! Reading the rulebook a service runs (the gateway; the consent registry for its vocabulary): the built-in federal rulebook, or a
//! directory of TOML files (which may extend it).

use std::path::Path;

use crate::registry::Registry;
use cii_policy::{Rulebook, Source};

/// The rulebook could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulebookError {
    /// The directory or a file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The rulebook has errors.
    #[error("the rulebook has {} error(s):\n{}", .0.len(), .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<cii_policy::Diagnostic>),
    /// The rulebook and the contract's field categories disagree.
    #[error("the rulebook and the contract's field categories disagree:\n{}", .0.iter().map(|d| format!("  error[{}]: {}", d.code, d.message)).collect::<Vec<_>>().join("\n"))]
    Contract(Vec<cii_types::exchange::Disagreement>),
    /// The rulebook and the registry disagree about an institution.
    #[error("rulebook and registry disagree about institution {id}: {problem}")]
    Disagreement {
        /// The institution id.
        id: String,
        /// How.
        problem: String,
    },
}

/// The `.toml` files of `dir`, sorted by name, with the federal base if they extend it.
pub fn read_dir(dir: &Path) -> Result<Vec<Source>, RulebookError> {
    let io = |source| RulebookError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).map_err(|source| RulebookError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push(Source { name, text });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cii_policy::rulebook::with_base(files))
}

/// The sources of `dir`, or the built-in federal rulebook when none is given.
pub fn sources(dir: Option<&Path>) -> Result<Vec<Source>, RulebookError> {
    match dir {
        Some(dir) => read_dir(dir),
        None => Ok(cii_policy::federal_sources()),
    }
}

/// Loads and checks the rulebook as of `today`.
pub fn load(dir: Option<&Path>, today: time::Date) -> Result<Rulebook, RulebookError> {
    cii_policy::load(&sources(dir)?, today).map_err(RulebookError::Invalid)
}

/// Every institution the rulebook describes must be in the registry with the same type.
pub fn check_agreement(rulebook: &Rulebook, registry: &Registry) -> Result<(), RulebookError> {
    for (id, facts) in &rulebook.institutions {
        match registry.get(id) {
            None => {
                return Err(RulebookError::Disagreement {
                    id: id.to_string(),
                    problem: "not in the registry".to_owned(),
                });
            }
            Some(member) if member.kind != facts.kind => {
                return Err(RulebookError::Disagreement {
                    id: id.to_string(),
                    problem: format!("registry says {}, rulebook says {}", member.kind, facts.kind),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The rulebook's categories against the contract's: every category is carried by some field,
/// every field's category is in the rulebook (see `cii_types::exchange::disagreements`).
pub fn contract_disagreements(rulebook: &Rulebook) -> Vec<cii_types::exchange::Disagreement> {
    let fields = match cii_types::exchange::Catalogue::load() {
        Ok(catalogue) => catalogue.field_categories(),
        Err(e) => {
            return vec![cii_types::exchange::Disagreement {
                code: e.code(),
                message: e.to_string(),
            }];
        }
    };
    let categories = rulebook.categories.iter().map(|c| c.id.clone()).collect();
    cii_types::exchange::disagreements(&fields, &categories)
}

/// [`contract_disagreements`] as a result: a gateway refuses to run a rulebook its contract cannot carry.
pub fn check_contract(rulebook: &Rulebook) -> Result<(), RulebookError> {
    let found = contract_disagreements(rulebook);
    if found.is_empty() {
        Ok(())
    } else {
        Err(RulebookError::Contract(found))
    }
}
