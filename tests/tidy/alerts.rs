//! The shipped alert rules (deploy/prometheus/cii-alerts.yml) name only metrics the
//! processes export: a renamed metric would leave an alert that can never fire.
//! (`promtool check rules` and `promtool test rules` run in CI, `.ci/run`.)

use std::collections::BTreeSet;

#[test]
fn every_metric_an_alert_reads_is_exported() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/cii-alerts.yml")).expect("alert rules");
    // A family shows in the text once it has a series: give each one.
    let metrics = cii_kit::metrics::Metrics::new("test");
    for family in [
        &metrics.deliveries,
        &metrics.audit_queries,
        &metrics.refusals,
        &metrics.auth_refusals,
        &metrics.decisions,
        &metrics.tls_refusals,
        &metrics.cosigning,
    ] {
        cii_kit::metrics::Metrics::count(family, "X");
    }
    let labels = cii_kit::metrics::BasisLabels {
        basis: "LPGA-32-1".into(),
        sender: "AS-VS".into(),
        recipient: "AI-VS".into(),
    };
    metrics.permits_by_basis.get_or_create(&labels).inc();
    let undisclosed = cii_kit::metrics::UndisclosedLabels {
        sender: "AI-VS".into(),
        outcome: "DENY".into(),
    };
    metrics.undisclosed.get_or_create(&undisclosed).inc();
    let exported: BTreeSet<String> = metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let mut named = BTreeSet::new();
    for expr in rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
        // Plain names, and the alternatives of a `__name__=~"cii_(auth_)?refusals_total"` match.
        let expr = expr.replace("(auth_)?", "");
        for (start, _) in expr.match_indices("cii_") {
            let name: String = expr[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            named.insert(name.trim_end_matches("_total").to_owned());
        }
        if expr.contains("__name__") {
            named.insert("cii_auth_refusals".to_owned());
        }
    }
    assert!(named.len() >= 5, "{named:?}");
    for name in &named {
        assert!(
            exported.contains(name),
            "alert rule reads {name}, which no process exports ({exported:?})"
        );
    }
}
