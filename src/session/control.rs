//! `sys.control.*` pulses: governance of the bus by its controllers.
//!
//! A control pulse is consumed by the shard that received it, never sequenced into its reality.
//! Only a controller session (a signed token with role `controller` or `admin`, or a Hello.token
//! in `control.controller_tokens`) may send one. Every control pulse of a controller, applied or
//! refused, gets exactly one audit record, written and synced before anything changes; the pulse
//! is then answered: a `PubAck` with `sequence = 0` when `ack` was asked for, or an error
//! (INVALID_REQUEST for a pulse that cannot be applied, INTERNAL when the audit log cannot
//! record it — then nothing changes).
//!
//! A pulse from a session that is not a controller changes nothing, so it is refused first,
//! before its payload is decoded or anything is written: PERMISSION_DENIED (answered at most
//! every 100 ms when no ack was asked for), counted (`control_non_controller_refusals`), and
//! recorded only as a count: each shard writes one record of such refusals at most once per
//! `control.refusal_record_window_ms` ([`crate::audit::coalesce`]). A connection that keeps
//! sending them is read no faster than `control.non_controller_pulses_per_sec`.
//!
//! Topics: `sys.control.policy.load` (payload `arqon.policy.v1.PolicyLoad`; a name already
//! loaded is replaced) and `sys.control.policy.unload` (`arqon.policy.v1.PolicyUnload`); the
//! operator topics `sys.control.operator.load|unload|param` are handled in
//! [`operator_control`](super::operator_control), `sys.control.param.set` in
//! [`param_control`](super::param_control).

use std::rc::Rc;
use std::sync::Arc;

use arqonbus_proto::frame::encode_frame;
use arqonbus_proto::policy::v1::{PolicyLoad, PolicyUnload};
use arqonbus_proto::v1::{server_frame, ArqonMessage, ErrorCode, PubAck, ServerFrame};
use prost::{Message, Name};
use serde_json::json;

use std::cell::Cell;
use std::time::Duration;

use super::{circuit_control, operator_control, param_control, reject, reject_unacked, Conn, Role};
use crate::audit::coalesce::Digest;
use crate::audit::{AuditError, Entry};
use crate::policy::{Catalogued, CompiledPolicy, PolicySpec, Registry};
use crate::shard::{uuid_v7, Shard};

/// Every topic under this prefix is a control pulse.
pub const PREFIX: &str = "sys.control.";
pub const POLICY_LOAD: &str = "sys.control.policy.load";
pub const POLICY_UNLOAD: &str = "sys.control.policy.unload";

pub fn is_control(topic: &str) -> bool {
    topic.starts_with(PREFIX)
}

/// Why a control pulse was not applied: the error code and message for the sender.
pub(super) struct Refusal {
    pub(super) code: ErrorCode,
    pub(super) reason: String,
}

impl Refusal {
    pub(super) fn invalid(reason: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidRequest,
            reason: reason.into(),
        }
    }
}

/// What one control pulse is about, for its audit record.
pub(super) struct Audited {
    pub(super) actor: String,
    pub(super) action: String,
    pub(super) target: String,
    pub(super) details: serde_json::Value,
}

impl Audited {
    pub(super) fn entry(&self, outcome: Result<(), &str>, extra: serde_json::Value) -> Entry {
        let mut details = self.details.clone();
        match outcome {
            Ok(()) => details["outcome"] = "applied".into(),
            Err(reason) => {
                details["outcome"] = "refused".into();
                details["reason"] = reason.into();
            }
        }
        if let (Some(d), serde_json::Value::Object(extra)) = (details.as_object_mut(), extra) {
            d.extend(extra);
        }
        Entry {
            actor: self.actor.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            details,
        }
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    correlation_id: u64,
    message: ArqonMessage,
    ack: bool,
) {
    shard.counters.control_pulses.inc();
    if conn.role() != Role::Controller {
        return refuse_non_controller(shard, conn, correlation_id, &message.topic, ack).await;
    }
    let audited = Audited {
        actor: actor(conn),
        action: message.topic.clone(),
        target: target_of(&message),
        details: json!({
            "reality_id": message.reality_id,
            "producer_id": message.producer_id,
            "correlation_id": correlation_id,
        }),
    };
    let result = {
        match message.topic.as_str() {
            POLICY_LOAD => load(shard, conn, &audited, &message).await,
            POLICY_UNLOAD => unload(shard, conn, &audited, &message).await,
            operator_control::LOAD => operator_control::load(shard, conn, &audited, &message).await,
            operator_control::UNLOAD => {
                operator_control::unload(shard, conn, &audited, &message).await
            }
            operator_control::PARAM => {
                // Acknowledged by the reality's owner once the change is sequenced.
                return operator_control::param(
                    shard,
                    conn,
                    &audited,
                    correlation_id,
                    message,
                    ack,
                )
                .await;
            }
            crate::circuit::APPLY_TOPIC => {
                circuit_control::apply(shard, conn, &audited, &message).await
            }
            crate::circuit::REMOVE_TOPIC => {
                circuit_control::remove(shard, conn, &audited, &message).await
            }
            crate::param::SET_TOPIC => {
                // Acknowledged by the reality's owner once the change is sequenced.
                return param_control::set(shard, conn, &audited, correlation_id, message, ack)
                    .await;
            }
            operator_control::FORK => {
                // Acknowledged by the fork's owner once it is written.
                return operator_control::fork(shard, conn, &audited, correlation_id, message, ack)
                    .await;
            }
            other => {
                let refusal = Refusal::invalid(format!(
                    "unknown control topic `{other}`; known: {POLICY_LOAD}, {POLICY_UNLOAD}, {}, \
                     {}, {}, {}, {}, {}, {}",
                    operator_control::LOAD,
                    operator_control::UNLOAD,
                    operator_control::PARAM,
                    operator_control::FORK,
                    crate::param::SET_TOPIC,
                    crate::circuit::APPLY_TOPIC,
                    crate::circuit::REMOVE_TOPIC
                ));
                refuse(shard, &audited, refusal).await
            }
        }
    };
    match result {
        Ok(()) => {
            if ack {
                conn.push_frame(&shard.counters, ack_frame(shard, correlation_id, &message));
            }
        }
        Err(refusal) => answer_refusal(shard, conn, correlation_id, &message, &audited, refusal),
    }
}

/// Paces one connection's refused control pulses: a token bucket of
/// `control.non_controller_pulses_per_sec`, as deep as one second of it.
#[derive(Debug, Default)]
pub(super) struct Pacer {
    /// Tokens left after the last take (negative: owed, the connection waits them out).
    tokens: Cell<f64>,
    last_unix_nanos: Cell<u64>,
}

impl Pacer {
    /// Takes one token; how long the connection must wait before it is read again.
    fn take(&self, now_unix_nanos: u64, per_sec: u64) -> Option<Duration> {
        let rate = per_sec as f64;
        let last = self.last_unix_nanos.replace(now_unix_nanos);
        let tokens = if last == 0 {
            rate
        } else {
            let elapsed = now_unix_nanos.saturating_sub(last) as f64 / 1e9;
            (self.tokens.get() + elapsed * rate).min(rate)
        } - 1.0;
        self.tokens.set(tokens);
        (tokens < 0.0).then(|| Duration::from_secs_f64(-tokens / rate))
    }
}

const NOT_A_CONTROLLER: &str = "sys.control.* pulses are accepted only from controllers (a \
                                signed token with role `controller`, or a Hello token listed \
                                in control.controller_tokens)";

/// Refuses a control pulse from a session that is not a controller, before anything is decoded
/// or written: answered, counted, gathered for the audit log, and paced.
async fn refuse_non_controller(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    correlation_id: u64,
    topic: &str,
    ack: bool,
) {
    shard.counters.control_refusals.inc();
    shard.counters.control_non_controller_refusals.inc();
    shard.counters.permission_denied.inc();
    if ack {
        reject(
            shard,
            conn,
            correlation_id,
            ErrorCode::PermissionDenied,
            NOT_A_CONTROLLER,
        );
    } else {
        reject_unacked(
            shard,
            conn,
            correlation_id,
            ErrorCode::PermissionDenied,
            NOT_A_CONTROLLER,
        );
    }
    let peer = conn
        .peer
        .map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
    if let Some(digest) = shard.note_control_refusal(&peer, topic) {
        record_refusals(shard, digest).await;
    }
    let now = shard.clock.now_unix_nanos();
    let per_sec = shard.config.control.non_controller_pulses_per_sec;
    if let Some(pause) = conn.control_pacer.take(now, per_sec) {
        glommio::timer::sleep(pause).await;
    }
}

/// Writes one record of gathered refusals of non-controllers.
async fn record_refusals(shard: &Shard, digest: Digest) {
    tracing::info!(
        shard = shard.id,
        refused = digest.refused,
        peers = ?digest.peers,
        "sys.control.* pulses from non-controllers refused"
    );
    let entry = Entry {
        actor: "non-controllers".into(),
        action: "control.non_controller_refusals".into(),
        target: String::new(),
        details: json!({
            "outcome": "refused",
            "reason": NOT_A_CONTROLLER,
            "shard": shard.id,
            "refused": digest.refused,
            "first_unix_nanos": digest.first_unix_nanos,
            "last_unix_nanos": digest.last_unix_nanos,
            "peers": digest.peers,
            "other_peers_refused": digest.other_peers_refused,
            "topics": digest.topics,
            "other_topics_refused": digest.other_topics_refused,
        }),
    };
    if let Err(e) = shard.audit.commit_async(move |w| w.append(entry)).await {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}

/// Records the refusals of non-controllers gathered since the last record (at shutdown).
pub(crate) async fn flush_refusals(shard: &Shard) {
    if let Some(digest) = shard.take_control_refusals() {
        record_refusals(shard, digest).await;
    }
}

/// Counts, logs and answers a refused control pulse.
pub(super) fn answer_refusal(
    shard: &Shard,
    conn: &Rc<Conn>,
    correlation_id: u64,
    message: &ArqonMessage,
    audited: &Audited,
    refusal: Refusal,
) {
    shard.counters.control_refusals.inc();
    tracing::info!(
        shard = shard.id,
        topic = %message.topic,
        actor = %audited.actor,
        reason = %refusal.reason,
        "control pulse refused"
    );
    reject(shard, conn, correlation_id, refusal.code, &refusal.reason);
}

/// Records a refusal, then hands it back for the answer.
pub(super) async fn refuse(
    shard: &Shard,
    audited: &Audited,
    refusal: Refusal,
) -> Result<(), Refusal> {
    let entry = audited.entry(Err(&refusal.reason), json!({}));
    match shard.audit.commit_async(move |w| w.append(entry)).await {
        Ok(_) => Err(refusal),
        // The refusal stands either way; say that the record is missing.
        Err(e) => Err(audit_failed(e, refusal)),
    }
}

fn audit_failed(e: AuditError, refusal: Refusal) -> Refusal {
    tracing::error!(error = %e, "cannot write the audit log");
    Refusal {
        code: refusal.code,
        reason: format!(
            "{} (and the audit log could not record this: {e})",
            refusal.reason
        ),
    }
}

async fn load(
    shard: &Shard,
    conn: &Conn,
    audited: &Audited,
    message: &ArqonMessage,
) -> Result<(), Refusal> {
    let prepared = match prepare_load(shard, message).await {
        Ok(policy) => policy,
        Err(refusal) => return refuse(shard, audited, refusal).await,
    };
    // A load replaces the policy of its name: what that one binds is taken away too.
    let replaced = shard.policy_host.registry.get(&prepared.spec.name);
    let checked = check_bindings(conn, &prepared.spec.bindings).and_then(|()| match &replaced {
        Some(old) => check_bindings(conn, &old.spec.bindings),
        None => Ok(()),
    });
    if let Err(refusal) = checked {
        return refuse(shard, audited, refusal).await;
    }
    let details = json!({
        "sha256": prepared.sha256_hex(),
        "wasm_bytes": prepared.wasm_bytes,
        "spec": prepared.spec.describe(),
    });
    let registry = shard.policy_host.registry.clone();
    install_audited(shard, audited, registry, prepared, details).await
}

/// May this controller bind to every reality `bindings` name? (`Identity::check_binding`.) Also
/// asked of what an unload or a replacing load takes away: the bindings of the module in place.
pub(super) fn check_bindings(
    conn: &Conn,
    bindings: &[crate::policy::Binding],
) -> Result<(), Refusal> {
    let Some(shielded) = conn.shielded() else {
        return Ok(());
    };
    for binding in bindings {
        if let Err(reason) = shielded.identity.check_binding(&binding.reality) {
            return Err(Refusal {
                code: ErrorCode::PermissionDenied,
                reason,
            });
        }
    }
    Ok(())
}

/// May this controller steer `reality`? (`Identity::check_reality`; `what` names the action.)
pub(super) fn check_reality(conn: &Conn, reality: &str, what: &str) -> Result<(), Refusal> {
    let Some(shielded) = conn.shielded() else {
        return Ok(());
    };
    shielded
        .identity
        .check_reality(reality, what)
        .map_err(|reason| Refusal {
            code: ErrorCode::PermissionDenied,
            reason,
        })
}

pub(super) fn audit_unavailable(e: AuditError) -> Refusal {
    Refusal {
        code: ErrorCode::Internal,
        reason: format!("the audit log could not record this, so nothing was changed: {e}"),
    }
}

/// Installs a compiled module (policy or operator), replacing the one of its name: check,
/// record, then apply, with no other governance action in between, so what the record says it
/// replaced is what it replaced.
pub(super) async fn install_audited<T: Catalogued + Send + Sync + 'static>(
    shard: &Shard,
    audited: &Audited,
    registry: Arc<Registry<T>>,
    prepared: Arc<T>,
    details: serde_json::Value,
) -> Result<(), Refusal> {
    let mut entry = audited.entry(Ok(()), details);
    let committed = shard
        .audit
        .commit_async(move |w| -> Result<Result<(), String>, AuditError> {
            let name = prepared.name().to_owned();
            if let Err(e) = registry.check_install(&name) {
                entry.details["outcome"] = "refused".into();
                entry.details["reason"] = e.to_string().into();
                w.append(entry)?;
                return Ok(Err(e.to_string()));
            }
            entry.details["replaced_sha256"] = registry.get(&name).map(|p| p.sha256_hex()).into();
            w.append(entry)?;
            Ok(registry
                .install(prepared)
                .map(|_| ())
                .map_err(|e| e.to_string()))
        })
        .await;
    match committed {
        Ok(Ok(())) => {
            tracing::info!(kind = T::KIND, name = %audited.target, actor = %audited.actor, "loaded");
            Ok(())
        }
        Ok(Err(reason)) => Err(Refusal::invalid(reason)),
        Err(e) => Err(audit_unavailable(e)),
    }
}

/// Unloads a module (policy or operator) by name, recorded first.
pub(super) async fn remove_audited<T: Catalogued + Send + Sync + 'static>(
    shard: &Shard,
    audited: &Audited,
    registry: Arc<Registry<T>>,
    name: String,
) -> Result<(), Refusal> {
    let applied = audited.entry(Ok(()), json!({}));
    let missing = format!("no {} named `{name}` is loaded", T::KIND);
    let refused = audited.entry(Err(&missing), json!({}));
    let committed = shard
        .audit
        .commit_async(move |w| -> Result<bool, AuditError> {
            let Some(current) = registry.get(&name) else {
                w.append(refused)?;
                return Ok(false);
            };
            let mut applied = applied;
            applied.details["sha256"] = current.sha256_hex().into();
            w.append(applied)?;
            registry.remove(&name);
            Ok(true)
        })
        .await;
    match committed {
        Ok(true) => {
            tracing::info!(kind = T::KIND, name = %audited.target, actor = %audited.actor, "unloaded");
            Ok(())
        }
        Ok(false) => Err(Refusal::invalid(missing)),
        Err(e) => Err(audit_unavailable(e)),
    }
}

/// Decodes, checks and compiles (on the blocking pool) the policy a load pulse carries.
async fn prepare_load(
    shard: &Shard,
    message: &ArqonMessage,
) -> Result<Arc<CompiledPolicy>, Refusal> {
    let load: PolicyLoad = decode(message)?;
    let host = shard.policy_host.clone();
    let (spec, wasm) =
        PolicySpec::from_load(host.config(), &load).map_err(|e| Refusal::invalid(e.to_string()))?;
    let compiled = glommio::executor()
        .spawn_blocking(move || host.compile(spec, &wasm))
        .await;
    compiled
        .map(Arc::new)
        .map_err(|e| Refusal::invalid(e.to_string()))
}

async fn unload(
    shard: &Shard,
    conn: &Conn,
    audited: &Audited,
    message: &ArqonMessage,
) -> Result<(), Refusal> {
    let unload: PolicyUnload = match decode(message) {
        Ok(u) => u,
        Err(refusal) => return refuse(shard, audited, refusal).await,
    };
    let registry = shard.policy_host.registry.clone();
    if let Some(installed) = registry.get(&unload.name) {
        if let Err(refusal) = check_bindings(conn, &installed.spec.bindings) {
            return refuse(shard, audited, refusal).await;
        }
    }
    remove_audited(shard, audited, registry, unload.name).await
}

/// The tail of a change that is sequenced into the control pulse's reality (an operator
/// parameter, a reality parameter): writes its audit record, then hands the bus's pulse on
/// `topic` with `payload` to the reality's owner, which answers the publisher (PubAck with the
/// change's sequence, or the error). The pulse keeps the control pulse's reality, producer and
/// trace context. When the audit log cannot record it, nothing is sequenced.
#[allow(clippy::too_many_arguments)]
pub(super) async fn audit_then_sequence(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    audited: &Audited,
    correlation_id: u64,
    message: &ArqonMessage,
    ack: bool,
    entry: Entry,
    topic: String,
    payload: prost_types::Any,
) {
    if let Err(e) = shard.audit.commit_async(move |w| w.append(entry)).await {
        tracing::error!(error = %e, "cannot write the audit log");
        let refusal = audit_unavailable(e);
        return answer_refusal(shard, conn, correlation_id, message, audited, refusal);
    }
    tracing::info!(
        reality = %message.reality_id,
        action = %audited.action,
        target = %audited.target,
        actor = %audited.actor,
        "change sent to be sequenced"
    );
    let pulse = ArqonMessage {
        topic,
        reality_id: message.reality_id.clone(),
        producer_id: message.producer_id.clone(),
        trace_context: message.trace_context.clone(),
        payload: Some(payload),
        ..Default::default()
    };
    let origin = crate::shard::Origin {
        shard: shard.id,
        conn: conn.id,
        correlation_id,
        ack,
        retained_charge: 0,
    };
    shard.sequence_at_owner(pulse, origin).await;
}

/// The payload as `M`: its type_url must name `M` (or be empty).
pub(super) fn decode<M: Message + Default + Name>(message: &ArqonMessage) -> Result<M, Refusal> {
    let Some(any) = &message.payload else {
        return Err(Refusal::invalid(format!(
            "{} needs a {} payload",
            message.topic,
            M::full_name()
        )));
    };
    if !any.type_url.is_empty() && any.type_url != M::type_url() {
        return Err(Refusal::invalid(format!(
            "{} needs a {} payload, not `{}`",
            message.topic,
            M::type_url(),
            any.type_url
        )));
    }
    M::decode(&any.value[..]).map_err(|e| {
        Refusal::invalid(format!(
            "the payload does not decode as {}: {e}",
            M::full_name()
        ))
    })
}

/// The policy a control pulse names, when it can be read (for the audit record).
fn target_of(message: &ArqonMessage) -> String {
    let Some(any) = &message.payload else {
        return String::new();
    };
    match message.topic.as_str() {
        POLICY_LOAD => PolicyLoad::decode(&any.value[..]).map(|l| l.name),
        POLICY_UNLOAD => PolicyUnload::decode(&any.value[..]).map(|u| u.name),
        topic => {
            return circuit_control::target_of(topic, &any.value)
                .unwrap_or_else(|| operator_control::target_of(topic, &any.value));
        }
    }
    .unwrap_or_default()
}

/// Who sent it, for the audit record. Never the token itself.
fn actor(conn: &Conn) -> String {
    let peer = conn
        .peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| "unknown".into());
    match conn.session() {
        Some(s) => format!(
            "{} session={} client={:?} peer={peer}",
            s.role.as_str(),
            s.session_id,
            s.client_name
        ),
        None => format!("unknown peer={peer}"),
    }
}

fn ack_frame(shard: &Shard, correlation_id: u64, message: &ArqonMessage) -> bytes::Bytes {
    let now = shard.clock.now_unix_nanos();
    encode_frame(&ServerFrame {
        correlation_id,
        kind: Some(server_frame::Kind::PubAck(PubAck {
            reality_id: message.reality_id.clone(),
            // Control pulses are not sequenced.
            sequence: 0,
            id: uuid_v7(now),
            timestamp_unix_nanos: now,
        })),
    })
}
