//! The reasoning of a decision, in French, German or English, for jurists.
//! The last line is always `Décision : PERMIT` / `Entscheid: DENY` / …, the
//! keywords PERMIT and DENY being the same in every language.

use std::fmt::Write;

use crate::decide::{
    BasisOutcome, ConditionTrace, Decision, Evaluation, InputError, ReasonCode, Source, Transfer, evaluate_traced,
};
use crate::rulebook::Rulebook;
use crate::vocab::{Condition, Lang, ObligationKind, Status};

/// Picks the text of `lang`.
pub(crate) fn l(lang: Lang, fr: &'static str, de: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Fr => fr,
        Lang::De => de,
        Lang::En => en,
    }
}

/// What a condition means, in words.
pub fn condition_label(c: Condition, lang: Lang) -> &'static str {
    match c {
        Condition::CaseByCase => l(
            lang,
            "cas d'espèce (une seule personne)",
            "Einzelfall (eine einzige Person)",
            "individual case (one person only)",
        ),
        Condition::WrittenRequest => l(
            lang,
            "demande écrite et motivée",
            "schriftliches und begründetes Gesuch",
            "written and reasoned request",
        ),
        Condition::Consent => l(
            lang,
            "consentement de la personne",
            "Einwilligung der Person",
            "consent of the person",
        ),
        Condition::WrittenConsent => l(
            lang,
            "consentement écrit dans le cas d'espèce",
            "schriftliche Einwilligung im Einzelfall",
            "written consent in the individual case",
        ),
        Condition::RecipientServesPerson => l(
            lang,
            "le destinataire suit la personne",
            "die Empfängerin betreut die Person",
            "the recipient serves the person",
        ),
        Condition::Reciprocity => l(
            lang,
            "le destinataire accorde la réciprocité",
            "die Empfängerin gewährt Gegenrecht",
            "the recipient grants reciprocity",
        ),
        Condition::CantonalRelease => l(
            lang,
            "levée du secret par une loi cantonale formelle",
            "Entbindung durch ein kantonales formelles Gesetz",
            "release by a cantonal formal law",
        ),
        Condition::CostBearerUnclear => l(
            lang,
            "l'organe compétent n'est pas encore clair",
            "der zuständige Kostenträger ist noch nicht klar",
            "the competent cost bearer is not yet clear",
        ),
        Condition::NoOverridingPrivateInterest => l(
            lang,
            "aucun intérêt privé prépondérant ne s'y oppose",
            "kein überwiegendes Privatinteresse steht entgegen",
            "no overriding private interest opposes it",
        ),
        Condition::PersonInformedBefore => l(
            lang,
            "personne informée au préalable",
            "Person vorgängig informiert",
            "person informed beforehand",
        ),
        Condition::NoMedicalData => l(
            lang,
            "aucune donnée médicale",
            "keine medizinischen Daten",
            "no medical data",
        ),
        Condition::RefugeeOrProvisionallyAdmitted => l(
            lang,
            "réfugié reconnu ou admis à titre provisoire",
            "anerkannter Flüchtling oder vorläufig aufgenommen",
            "recognised refugee or provisionally admitted",
        ),
        Condition::EmployabilityEstablished => l(
            lang,
            "employabilité établie",
            "Arbeitsmarktfähigkeit festgestellt",
            "employability established",
        ),
        Condition::ReceivesSocialAid => l(
            lang,
            "perçoit l'aide sociale",
            "bezieht Sozialhilfe",
            "receives social assistance",
        ),
        Condition::ReceivesPc => l(
            lang,
            "perçoit des prestations complémentaires",
            "bezieht Ergänzungsleistungen",
            "receives supplementary benefits",
        ),
    }
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

fn obligation_label(k: ObligationKind, lang: Lang) -> &'static str {
    match k {
        ObligationKind::InformPersonAfter => l(
            lang,
            "informer la personne après coup de l'échange et de son contenu",
            "die Person nachträglich über den Austausch und seinen Inhalt informieren",
            "inform the person afterwards of the exchange and its content",
        ),
        ObligationKind::SendDecisionCopy => l(
            lang,
            "envoyer une copie de la décision",
            "eine Kopie der Verfügung zustellen",
            "send a copy of the decision",
        ),
    }
}

fn source_text(rb: &Rulebook, c: &ConditionTrace, t: &Transfer, lang: Lang) -> String {
    match &c.source {
        Source::Persons(n) => format!("{} : {n}", l(lang, "personnes", "Personen", "persons"))
            .replace(" :", if lang == Lang::Fr { " :" } else { ":" }),
        Source::Fact(f) if c.held => format!("{} `{f}`", l(lang, "fait donné", "Tatsache angegeben", "fact given")),
        Source::Fact(f) => format!(
            "{} `{f}`",
            l(lang, "fait non donné", "Tatsache nicht angegeben", "fact not given")
        ),
        Source::Attestation(id, citation) => {
            let what = if c.condition == Condition::Reciprocity {
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
            let medical: Vec<&str> = rb
                .categories
                .iter()
                .filter(|c| c.medical)
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
                        condition_label(c.condition, lang),
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
                .map(|c| format!("{colon} {}", condition_label(c, lang)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}{colon} {}{condition}{basis}",
                l(lang, "Motif", "Grund", "Reason"),
                reason_label(r.code, lang)
            );
        }
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
            obligation_label(o.kind, lang),
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
