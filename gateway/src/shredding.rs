//! The exceptional early shredding of a month (`Audit/ShredPeriod`): an entry holds content
//! that must not be kept, so the month's key is destroyed before retention would. Two people
//! of two roles decide: one of role `operator` or `network_dpo` asks (SHREDDING_REQUESTED:
//! the month, the entry, the reason), a user of the other role approves (SHREDDING_APPROVED),
//! and only then is the key destroyed, together with the store's record naming the approval.
//! `cii audit verify` accepts a month destroyed before it was due only with both entries.

use cii_kit::auth::Caller;
use cii_proto::audit as pb;
use cii_types::Role;

use crate::GatewayError;

/// The longest reason.
const REASON_MAX: usize = 500;

/// The role in which `caller` acts: exactly one of the two (a user holding both could approve
/// their own request under the other hat).
fn role_of(caller: &Caller) -> Result<&'static str, GatewayError> {
    match (caller.user.has(Role::Operator), caller.user.has(Role::NetworkDpo)) {
        (true, false) => Ok("operator"),
        (false, true) => Ok("network_dpo"),
        _ => Err(GatewayError::ShredApprovalInvalid(
            "an early shredding is asked for and approved by two users, one of role operator and one of role network_dpo, each holding one of them",
        )),
    }
}

fn invalid(field: &'static str, problem: &'static str) -> GatewayError {
    GatewayError::ShredInvalid { field, problem }
}

/// What may be destroyed early: an ended month whose key is still there.
async fn check_period(store: &cii_audit::Store, period: &str, now_micros: i64) -> Result<(), GatewayError> {
    let ended = cii_audit::body::period_end_micros(period).is_some_and(|end| end <= now_micros);
    if !ended {
        return Err(invalid("period", "the period is a month YYYY-MM that has ended"));
    }
    let periods = store.periods().await.map_err(|_| GatewayError::AuditUnreadable)?;
    if !periods
        .iter()
        .any(|p| p.period == period && p.destroyed_micros.is_none())
    {
        return Err(invalid(
            "period",
            "the log holds no key of this month (none, or destroyed already)",
        ));
    }
    Ok(())
}

/// The readable entry at `index`, if there is one.
async fn logged(store: &cii_audit::Store, index: u64) -> Result<Option<cii_audit::Entry>, GatewayError> {
    let bytes = store
        .entry_bytes(index)
        .await
        .map_err(|_| GatewayError::AuditUnreadable)?;
    Ok(bytes.and_then(|b| cii_audit::entry::decode(&b).ok()))
}

/// The reason, checked: 1–500 characters, no control character, no AVS number.
fn check_reason(reason: &str) -> Result<(), GatewayError> {
    let ok = !reason.trim().is_empty()
        && reason.chars().count() <= REASON_MAX
        && !reason.chars().any(char::is_control)
        && !cii_types::avs::contains_avs(reason);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "reason",
            "1-500 characters, no control character, no AVS number",
        ))
    }
}

/// The entry of a request: the month and the entry of that month it names.
pub(crate) async fn request_entry(
    store: &cii_audit::Store,
    caller: &Caller,
    request: &pb::ShredPeriodRequest,
    now_micros: i64,
) -> Result<cii_audit::Entry, GatewayError> {
    let role = role_of(caller)?;
    check_period(store, &request.period, now_micros).await?;
    check_reason(&request.reason)?;
    let named = logged(store, request.entry).await?;
    if named.is_none_or(|e| cii_audit::body::period_of(e.time_micros) != request.period) {
        return Err(invalid("entry", "the index of a readable entry of that month"));
    }
    Ok(cii_audit::Entry {
        kind: pb::EntryKind::ShreddingRequested as i32,
        time_micros: now_micros,
        sender: caller.institution.id.to_string(),
        acting_user: caller.acting_user(),
        detail: format!(
            "period={} entry={} role={role} reason={}",
            request.period, request.entry, request.reason
        ),
        ..cii_audit::Entry::default()
    })
}

/// The entry of an approval: the request it approves must be of this month, pending, and by
/// another user of the other role.
pub(crate) async fn approval_entry(
    store: &cii_audit::Store,
    caller: &Caller,
    request: &pb::ShredPeriodRequest,
    now_micros: i64,
) -> Result<cii_audit::Entry, GatewayError> {
    let role = role_of(caller)?;
    check_period(store, &request.period, now_micros).await?;
    let asked = logged(store, request.approve)
        .await?
        .filter(|e| e.kind == pb::EntryKind::ShreddingRequested as i32)
        .ok_or(GatewayError::ShredApprovalInvalid(
            "approve names no early-shredding request",
        ))?;
    let value = |key: &str| asked.detail.split_whitespace().find_map(|w| w.strip_prefix(key));
    if value("period=") != Some(request.period.as_str()) {
        return Err(GatewayError::ShredApprovalInvalid("the request is for another month"));
    }
    if asked.acting_user == caller.acting_user() || value("role=") == Some(role) {
        return Err(GatewayError::ShredApprovalInvalid(
            "the approval comes from another user, of the role the request does not have",
        ));
    }
    Ok(cii_audit::Entry {
        kind: pb::EntryKind::ShreddingApproved as i32,
        time_micros: now_micros,
        sender: caller.institution.id.to_string(),
        acting_user: caller.acting_user(),
        detail: format!("period={} request={} role={role}", request.period, request.approve),
        ..cii_audit::Entry::default()
    })
}
