//! The reasoning of a decision, in French, German or English, for jurists.
//! The last line is always `Décision : PERMIT` / `Entscheid: DENY` / …, the
//! keywords PERMIT and DENY being the same in every language.

use std::fmt::Write;

use crate::decide::{
    BasisOutcome, ConditionTrace, Decision, Evaluation, InputError, ReasonCode, Source, Transfer, evaluate_traced,
};
use crate::rulebook::Rule;
use crate::rulebook::Rulebook;
use crate::vocab::{Builtin, Lang, Status};

/// Picks the text of `lang`.
pub(crate) fn l(lang: Lang, fr: &'static str, de: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Fr => fr,
        Lang::De => de,
        Lang::En => en,
    }
}

/// What a condition means, in words (as the rulebook declares it).
pub fn condition_label(rb: &Rulebook, c: usize, lang: Lang) -> &str {
    rb.conditions.get(c).map_or("?", |d| d.labels.get(lang))
}

fn reason_label(code: ReasonCode, lang: Lang) -> &'static str {
    match code {
        ReasonCode::NoMatchingBasis => l(
            lang,
            "aucune base légale ne couvre cet expéditeur, ce destinataire et ce déclencheur",
            "keine Rechtsgrundlage deckt diesen Absender, diese Empfängerin und diesen Auslöser",
            "no legal basis covers this sender, recipient and trigger",
        ),
        ReasonCode::TriggerNotCovered => l(
            lang,
            "déclencheur non couvert",
            "Auslöser nicht gedeckt",
            "trigger not covered",
        ),
        ReasonCode::PurposeNotPermitted => l(lang, "but non autorisé", "Zweck nicht erlaubt", "purpose not permitted"),
        ReasonCode::ConditionNotMet => l(
            lang,
            "condition non remplie",
            "Voraussetzung nicht erfüllt",
            "condition not met",
        ),
        ReasonCode::CategoryNotPermitted => l(
            lang,
            "aucune base applicable n'autorise cette catégorie",
            "keine anwendbare Grundlage erlaubt diese Kategorie",
            "no applicable basis permits this category",
        ),
        ReasonCode::ConsentDoesNotCover => l(
            lang,
            "le consentement ne couvre pas cette catégorie",
            "die Einwilligung deckt diese Kategorie nicht",
            "the consent does not cover this category",
        ),
        ReasonCode::MedicalDataExcluded => l(
            lang,
            "données médicales exclues par la base",
            "medizinische Daten durch die Grundlage ausgeschlossen",
            "medical data excluded by the basis",
        ),
        ReasonCode::SensitiveDataExcluded => l(
            lang,
            "données sensibles exclues par la base",
            "besonders schützenswerte Daten durch die Grundlage ausgeschlossen",
            "sensitive data excluded by the basis",
        ),
        ReasonCode::ReviewRequired => l(
            lang,
            "demande en attente de l'examen du détenteur (pas de réponse automatique)",
            "Anfrage wartet auf die Prüfung der Inhaberin (keine automatische Antwort)",
            "request waiting for the holder's review (no automatic answer)",
        ),
        ReasonCode::ReviewRefused => l(
            lang,
            "refusée par le détenteur après examen",
            "von der Inhaberin nach Prüfung abgelehnt",
            "refused by the holder after review",
        ),
        ReasonCode::ReviewTimeout => l(
            lang,
            "le détenteur n'a pas répondu dans le délai d'examen",
            "die Inhaberin hat nicht innert der Prüfungsfrist geantwortet",
            "the holder did not answer within the review period",
        ),
        ReasonCode::NoBasisHolds => l(
            lang,
            "aucune base légale ne s'applique à ce transfert",
            "keine Rechtsgrundlage ist auf diese Übermittlung anwendbar",
            "no legal basis applies to this transfer",
        ),
    }
}

fn status_label(s: Status, lang: Lang) -> &'static str {
    match s {
        Status::Verified => l(lang, "vérifiée", "verifiziert", "verified"),
        Status::Inference => l(
            lang,
            "inférence, à confirmer",
            "Folgerung, zu bestätigen",
            "inference, to be confirmed",
        ),
        Status::Open => l(lang, "ouverte", "offen", "open"),
    }
}

fn obligation_label(rb: &Rulebook, k: usize, lang: Lang) -> &str {
    rb.obligation_kinds.get(k).map_or("?", |d| d.labels.get(lang))
}

fn source_text(rb: &Rulebook, c: &ConditionTrace, t: &Transfer, lang: Lang) -> String {
    match &c.source {
        Source::Persons(n, referenced) => {
            let persons = format!("{} : {n}", l(lang, "personnes", "Personen", "persons"))
                .replace(" :", if lang == Lang::Fr { " :" } else { ":" });
            if *referenced {
                persons
            } else {
                format!(
                    "{persons}, {}",
                    l(
                        lang,
                        "aucune référence de dossier",
                        "kein Aktenzeichen",
                        "no case reference"
                    )
                )
            }
        }
        Source::Fact(f) => {
            let id = rb.facts.get(*f).map_or("?", |d| d.id.as_str());
            if c.held {
                format!("{} `{id}`", l(lang, "fait donné", "Tatsache angegeben", "fact given"))
            } else {
                format!(
                    "{} `{id}`",
                    l(lang, "fait non donné", "Tatsache nicht angegeben", "fact not given")
                )
            }
        }
        Source::Duty(Some(i)) => rb.federal_duties.get(*i).map_or_else(String::new, |d| {
            format!(
                "{} {} ({})",
                l(lang, "devoir fédéral", "Bundespflicht", "federal duty"),
                d.id,
                d.citation.get(lang)
            )
        }),
        Source::Duty(None) => l(
            lang,
            "aucune loi fédérale n'impose de communiquer à ce destinataire",
            "kein Bundesgesetz verpflichtet zur Bekanntgabe an diese Empfängerin",
            "no federal act imposes disclosure to this recipient",
        )
        .to_owned(),
        Source::Combined(parts) => {
            let parts: Vec<String> = parts
                .iter()
                .map(|(i, held)| format!("{} {}", if *held { "✓" } else { "✗" }, condition_label(rb, *i, lang)))
                .collect();
            parts.join("; ")
        }
        Source::Attestation(id, citation) => {
            let reciprocity = matches!(
                rb.conditions.get(c.condition).map(|d| &d.rule),
                Some(Rule::Builtin(Builtin::Reciprocity))
            );
            let what = if reciprocity {
                format!(
                    "{id} {} {} {}",
                    l(
                        lang,
                        "accorde la réciprocité à",
                        "gewährt Gegenrecht an",
                        "grants reciprocity to"
                    ),
                    t.from.kind,
                    l(lang, "par", "gemäss", "by")
                )
            } else if matches!(rb.conditions.get(c.condition).map(|d| &d.rule), Some(Rule::Fact(_))) {
                format!("{id} : {}", l(lang, "attesté par", "bestätigt durch", "attested by"))
            } else {
                format!("{id} : {}", l(lang, "levée par", "Entbindung durch", "released by"))
            };
            format!("{what} {citation}")
        }
        Source::Consent(Some(reference)) => {
            format!("{} {reference}", l(lang, "consentement", "Einwilligung", "consent"))
        }
        Source::Consent(None) => l(
            lang,
            "aucun consentement ne couvre ce but et ces catégories",
            "keine Einwilligung deckt diesen Zweck und diese Kategorien",
            "no consent covers this purpose and these categories",
        )
        .to_owned(),
        Source::Restriction => {
            let sensitive = matches!(
                rb.conditions.get(c.condition).map(|d| &d.rule),
                Some(Rule::Builtin(Builtin::NoSensitiveData))
            );
            let medical: Vec<&str> = rb
                .categories
                .iter()
                .filter(|c| {
                    if sensitive {
                        c.sensitivity == crate::vocab::Sensitivity::Sensitive
                    } else {
                        c.medical
                    }
                })
                .map(|c| c.id.as_str())
                .collect();
            format!(
                "{} : {}",
                l(lang, "jamais libérées", "nie freigegeben", "never released"),
                medical.join(", ")
            )
        }
        Source::NotApplicable => l(
            lang,
            "aucune partie cantonale",
            "keine kantonale Partei",
            "no cantonal party",
        )
        .to_owned(),
    }
}

fn names(rb: &Rulebook, idx: &[usize]) -> String {
    let v: Vec<&str> = idx
        .iter()
        .filter_map(|i| rb.categories.get(*i))
        .map(|c| c.id.as_str())
        .collect();
    if v.is_empty() { "—".to_owned() } else { v.join(", ") }
}

/// Renders an evaluation.
pub fn render(rb: &Rulebook, t: &Transfer, ev: &Evaluation, lang: Lang) -> String {
    let colon = if lang == Lang::Fr { " :" } else { ":" };
    let mut out = String::new();
    let party = |p: &crate::decide::Party| match &p.id {
        Some(id) => format!("{id} ({}, {})", p.kind, rb.type_label(p.kind, lang)),
        None => format!("{} ({})", p.kind, rb.type_label(p.kind, lang)),
    };
    let _ = writeln!(
        out,
        "{}",
        l(lang, "Transfert examiné", "Geprüfte Übermittlung", "Transfer examined")
    );
    let _ = writeln!(out, "  {}{colon} {}", l(lang, "De", "Von", "From"), party(&t.from));
    let _ = writeln!(out, "  {}{colon} {}", l(lang, "À", "An", "To"), party(&t.to));
    let trigger = t
        .trigger
        .map_or_else(|| l(lang, "tous", "alle", "any").to_owned(), |tr| tr.to_string());
    let _ = writeln!(
        out,
        "  {}{colon} {trigger}",
        l(lang, "Déclencheur", "Auslöser", "Trigger")
    );
    let purpose_label = rb
        .purpose_index(&t.purpose)
        .and_then(|i| rb.purposes.get(i))
        .map_or("", |p| p.labels.get(lang));
    let _ = writeln!(
        out,
        "  {}{colon} {} — {purpose_label}",
        l(lang, "But", "Zweck", "Purpose"),
        t.purpose
    );
    let _ = writeln!(
        out,
        "  {}{colon} {}",
        l(
            lang,
            "Catégories demandées",
            "Verlangte Kategorien",
            "Categories asked for"
        ),
        t.categories.join(", ")
    );
    let _ = writeln!(
        out,
        "  {}{colon} {} · {}{colon} {}",
        l(lang, "Personnes", "Personen", "Persons"),
        t.persons,
        l(lang, "Date", "Datum", "Date"),
        t.date
    );
    let _ = writeln!(
        out,
        "{}",
        l(lang, "Bases examinées", "Geprüfte Grundlagen", "Bases examined")
    );
    if ev.trace.is_empty() {
        let _ = writeln!(out, "  {}", reason_label(ReasonCode::NoMatchingBasis, lang));
    }
    for bt in &ev.trace {
        let Some(b) = rb.bases.get(bt.basis) else { continue };
        let _ = writeln!(
            out,
            "  {} — {} [{}]",
            b.id,
            b.citation.get(lang),
            status_label(b.status, lang)
        );
        match &bt.outcome {
            BasisOutcome::Inactive => {
                let _ = writeln!(
                    out,
                    "    ✗ {}",
                    l(
                        lang,
                        "inactive (à confirmer par les juristes)",
                        "inaktiv (durch Juristen zu bestätigen)",
                        "inactive (awaiting jurists' confirmation)"
                    )
                );
            }
            BasisOutcome::ReviewRequired => {
                let _ = writeln!(out, "    ✗ {}", reason_label(ReasonCode::ReviewRequired, lang));
            }
            BasisOutcome::OtherCanton => {
                let _ = writeln!(
                    out,
                    "    ✗ {} {}",
                    l(
                        lang,
                        "limitée aux cantons",
                        "beschränkt auf die Kantone",
                        "limited to the cantons"
                    ),
                    b.cantons.join(", ")
                );
            }
            BasisOutcome::NotInForce => {
                let _ = writeln!(
                    out,
                    "    ✗ {} {}",
                    l(lang, "pas en vigueur le", "nicht in Kraft am", "not in force on"),
                    t.date
                );
            }
            BasisOutcome::TriggerNotCovered => {
                let triggers: Vec<&str> = b.triggers.iter().map(|t| t.as_str()).collect();
                let _ = writeln!(
                    out,
                    "    ✗ {} ({}{colon} {})",
                    reason_label(ReasonCode::TriggerNotCovered, lang),
                    l(lang, "couvre", "deckt", "covers"),
                    triggers.join(", ")
                );
            }
            BasisOutcome::PurposeNotPermitted => {
                let purposes: Vec<&str> = b
                    .purposes
                    .iter()
                    .filter_map(|i| rb.purposes.get(*i))
                    .map(|p| p.id.as_str())
                    .collect();
                let _ = writeln!(
                    out,
                    "    ✗ {} ({}{colon} {})",
                    reason_label(ReasonCode::PurposeNotPermitted, lang),
                    l(lang, "autorise", "erlaubt", "permits"),
                    purposes.join(", ")
                );
            }
            outcome => {
                for c in &bt.conditions {
                    let mark = if c.held { "✓" } else { "✗" };
                    let _ = writeln!(
                        out,
                        "    {mark} {}{colon} {}",
                        condition_label(rb, c.condition, lang),
                        source_text(rb, c, t, lang)
                    );
                }
                match outcome {
                    BasisOutcome::Releases(cats) => {
                        let _ = writeln!(
                            out,
                            "    → {}{colon} {}",
                            l(lang, "libère", "gibt frei", "releases"),
                            names(rb, cats)
                        );
                    }
                    BasisOutcome::NothingToRelease => {
                        let _ = writeln!(
                            out,
                            "    → {}",
                            l(
                                lang,
                                "ne libère aucune des catégories demandées",
                                "gibt keine der verlangten Kategorien frei",
                                "releases none of the categories asked for"
                            )
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            out,
                            "    → {}",
                            l(lang, "ne s'applique pas", "nicht anwendbar", "does not apply")
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(out, "{}", l(lang, "Résultat", "Ergebnis", "Result"));
    let _ = writeln!(
        out,
        "  {}{colon} {}",
        l(
            lang,
            "Catégories libérées",
            "Freigegebene Kategorien",
            "Categories released"
        ),
        names(rb, ev.decision.released())
    );
    let sensitive: Vec<usize> = ev
        .decision
        .released()
        .iter()
        .copied()
        .filter(|i| {
            rb.categories
                .get(*i)
                .is_some_and(|c| c.sensitivity == crate::vocab::Sensitivity::Sensitive)
        })
        .collect();
    if !sensitive.is_empty() {
        let _ = writeln!(
            out,
            "  {}{colon} {}",
            l(
                lang,
                "Dont données sensibles (nLPD art. 5 let. c)",
                "Davon besonders schützenswerte Daten (DSG Art. 5 Bst. c)",
                "Of which sensitive data (nLPD art. 5 let. c)"
            ),
            names(rb, &sensitive)
        );
    }
    for w in ev.decision.withheld() {
        let id = rb.categories.get(w.category).map_or("?", |c| c.id.as_str());
        let _ = writeln!(
            out,
            "  {}{colon} {id} — {}",
            l(lang, "Retenue", "Zurückbehalten", "Withheld"),
            reason_label(w.reason, lang)
        );
    }
    if let Decision::Deny { reasons, .. } = &ev.decision {
        for r in reasons {
            let basis = r
                .basis
                .and_then(|i| rb.bases.get(i))
                .map(|b| format!(" — {} ({})", b.id, b.citation.get(lang)))
                .unwrap_or_default();
            let condition = r
                .condition
                .map(|c| format!("{colon} {}", condition_label(rb, c, lang)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}{colon} {}{condition}{basis}",
                l(lang, "Motif", "Grund", "Reason"),
                reason_label(r.code, lang)
            );
        }
    }
    if !ev.decision.is_permit()
        && let Some(secrecy) = rb.secrecy_of(t.from.kind)
    {
        let _ = writeln!(
            out,
            "  {}{colon} {secrecy}",
            l(
                lang,
                "Secret applicable",
                "Anwendbare Schweigepflicht",
                "Secrecy that applies"
            )
        );
    }
    for o in ev.decision.obligations() {
        let basis = rb.bases.get(o.basis).map_or("", |b| b.id.as_str());
        let who = o
            .party
            .id
            .as_ref()
            .map_or_else(|| o.party.kind.to_string(), |id| id.to_string());
        let _ = writeln!(
            out,
            "  {}{colon} {} — {who}, {} {} ({basis})",
            l(lang, "Obligation", "Pflicht", "Obligation"),
            obligation_label(rb, o.kind, lang),
            l(lang, "délai", "Frist", "within"),
            format_days(o.due_days, lang)
        );
    }
    if !ev.decision.bases().is_empty() {
        let cited: Vec<String> = ev
            .decision
            .bases()
            .iter()
            .filter_map(|i| rb.bases.get(*i))
            .map(|b| format!("{} ({})", b.id, b.citation.get(lang)))
            .collect();
        let _ = writeln!(
            out,
            "  {}{colon} {}",
            l(lang, "Bases", "Grundlagen", "Bases"),
            cited.join("; ")
        );
    }
    let _ = writeln!(
        out,
        "  {}{colon} {} ({} {})",
        l(lang, "Recueil", "Regelwerk", "Rulebook"),
        rb.version,
        l(lang, "empreinte", "Prüfsumme", "hash"),
        ev.decision.rulebook_hash().get(..16).unwrap_or("")
    );
    let verdict = if ev.decision.is_permit() { "PERMIT" } else { "DENY" };
    let _ = write!(out, "{}{colon} {verdict}", l(lang, "Décision", "Entscheid", "Decision"));
    out
}

fn format_days(days: u32, lang: Lang) -> String {
    format!("{days} {}", l(lang, "jours", "Tage", "days"))
}

/// Decides `t` and renders the full reasoning in `lang`.
pub fn explain(rb: &Rulebook, t: &Transfer, lang: Lang) -> Result<String, InputError> {
    let ev = evaluate_traced(rb, t)?;
    Ok(render(rb, t, &ev, lang))
}
