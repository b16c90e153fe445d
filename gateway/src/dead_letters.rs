//! The network operator's dead letters (`ListDeadLetters`, `ResolveDeadLetter`):
//! deliveries taken out of the outbox (see `delivery`). Resolving one is logged
//! (DEAD_LETTER_RESOLVED, naming the operator) before the outbox changes.

use cii_audit::Log;
use cii_kit::auth::Caller;
use cii_proto::gateway as pb;
use pb::resolve_dead_letter_request::Action;

use crate::GatewayError;
use crate::store::Store;

/// Most dead letters listed at once.
const LIST_MAX: u32 = 1_000;

/// The dead letters, oldest first.
pub async fn list(
    store: &Store,
    request: &pb::ListDeadLettersRequest,
) -> Result<pb::ListDeadLettersResponse, GatewayError> {
    let limit = match request.limit {
        0 => 100,
        n => n.min(LIST_MAX),
    };
    let rows = store.dead_letters(limit).await?;
    Ok(pb::ListDeadLettersResponse {
        dead_letters: rows
            .into_iter()
            .map(|r| pb::DeadLetter {
                sender: r.sender,
                transfer_id: r.transfer_id,
                recipient: r.recipient,
                error_code: r.error_code,
                attempts: r.attempts,
                dead_at: Some(cii_types::time::timestamp_of_micros(r.dead_micros)),
                size_bytes: r.size_bytes,
            })
            .collect(),
    })
}

/// Retries or drops one dead letter; its entry is durable first.
pub async fn resolve(
    store: &Store,
    audit: &Log,
    caller: &Caller,
    now_micros: i64,
    request: &pb::ResolveDeadLetterRequest,
) -> Result<pb::ResolveDeadLetterResponse, GatewayError> {
    let action = match Action::try_from(request.action) {
        Ok(Action::Retry) => "retry",
        Ok(Action::Drop) => "drop",
        _ => return Err(GatewayError::ActionRequired),
    };
    let row = store
        .dead_letter_of(&request.sender, &request.transfer_id)
        .await?
        .ok_or(GatewayError::DeadLetterNotFound)?;
    let entry = cii_audit::Entry {
        time_micros: now_micros,
        kind: cii_audit::EntryKind::DeadLetterResolved as i32,
        transfer_id: row.transfer_id.clone(),
        sender: row.sender.clone(),
        recipient: row.recipient.clone(),
        acting_user: caller.acting_user(),
        detail: format!("action={action} code={}", row.error_code),
        ..cii_audit::Entry::default()
    };
    let receipt = audit.append(entry).await.map_err(|e| {
        tracing::error!(code = e.code(), error = %e, "dead letter resolution not logged");
        GatewayError::Audit(e)
    })?;
    let changed = if action == "retry" {
        store
            .retry_dead_letter(&row.sender, &row.transfer_id, now_micros)
            .await?
    } else {
        store.drop_dead_letter(&row.sender, &row.transfer_id).await?
    };
    if !changed {
        // Resolved concurrently by another call: logged, nothing left to do.
        return Err(GatewayError::DeadLetterNotFound);
    }
    tracing::info!(sender = %row.sender, transfer_id = %row.transfer_id, action, "dead letter resolved");
    Ok(pb::ResolveDeadLetterResponse {
        audit_index: receipt.index,
    })
}
