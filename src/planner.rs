//! The pure planner: from the spec, the recorded status and what the controller knows right now, decide the
//! next action and derive the conditions and phase. No IO happens here; every forensic ordering rule does.
//!
//! Ordering: volatile data (changes fastest), then memory, then disk snapshots, then isolation. Isolation
//! never starts before every requested evidence step has ended; after a failed or skipped acquisition it
//! runs only when `onAcquisitionFailure` is Isolate. A step that has started always runs to its end, even
//! while the capture is being deleted, so nothing is left half-done or unrecorded.

pub mod dry_run;

use crate::api::{
    AcquisitionFailurePolicy, ForensicCaptureSpec, ForensicCaptureStatus, Group, Needs, Phase, Reason, Step, StepRecord, StepState, TargetFacts,
    conditions::{ACQUIRED, Desired, FAILED, FORENSIC_COPIED, ISOLATED, READY, SNAPSHOTTED},
};

fn state(step: Step, status: &ForensicCaptureStatus) -> Option<StepState> {
    step.record(status).map(|r| r.state)
}

/// Facts the planner needs that are not in the status.
#[derive(Debug, Clone, Default)]
pub struct Situation {
    /// This capture holds the per-instance lock.
    pub lock_held: bool,
    /// The resource is being deleted: finish what started, start nothing new.
    pub deleting: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Already complete.
    Nothing,
    /// Look the instance up and record its facts.
    ResolveTarget,
    /// Take the per-instance lock.
    AcquireLock,
    /// Look for the CaptureApproval this capture waits for (spec.requiresApproval): nothing is done in AWS,
    /// not even resolving the target, until one is recorded.
    AwaitApproval,
    /// Start or continue a step.
    Run(Step),
    /// Record that a step will not run, and why.
    Skip { step: Step, reason: Reason, message: String },
    /// Read what a capture would change and record the plan (spec.dryRun): no side effect.
    Plan,
    /// Every requested step has ended (or a dry run's plan is recorded): record completion and release the
    /// lock.
    Finish,
}

fn skip(step: Step, reason: Reason, message: String) -> Action {
    Action::Skip { step, reason, message }
}

pub fn next_action(spec: &ForensicCaptureSpec, status: &ForensicCaptureStatus, situation: &Situation) -> Action {
    if status.completed_at.is_some() {
        return Action::Nothing;
    }
    if awaiting_approval(spec, status) && !situation.deleting {
        return Action::AwaitApproval;
    }
    if spec.dry_run {
        return dry_run_action(status, situation);
    }
    let pending: Vec<Step> =
        Step::ALL.iter().copied().filter(|&s| s.enabled(spec) && !state(s, status).is_some_and(StepState::is_terminal)).collect();
    let Some(&first) = pending.first() else {
        return Action::Finish;
    };
    if situation.deleting {
        // Drain: a started step runs to its end; the rest are recorded as not done.
        if let Some(&running) = pending.iter().find(|&&s| state(s, status) == Some(StepState::Running)) {
            return Action::Run(running);
        }
        return skip(first, Reason::CaptureDeleted, format!("the ForensicCapture was deleted before the {} step started", first.name()));
    }
    let Some(target) = status.target.as_ref() else {
        return Action::ResolveTarget;
    };
    if !situation.lock_held {
        return Action::AcquireLock;
    }
    if first.record(status).is_some() {
        // A step that has started always runs to its end.
        return Action::Run(first);
    }
    let info = first.info();
    if let Some((reason, message)) = agent_skip(first, target) {
        return skip(first, reason, message);
    }
    if first == Step::ForensicCopy && state(Step::Disk, status) != Some(StepState::Succeeded) {
        return skip(
            first,
            Reason::NoSnapshotsToCopy,
            format!("instance {}: the disk step did not complete, so there are no snapshots to copy to the forensic account", target.instance_id),
        );
    }
    if info.group == Group::Isolated {
        if let (Some(record), AcquisitionFailurePolicy::Hold) = (acquisition_failure(spec, status), spec.steps.isolation.on_acquisition_failure) {
            return skip(
                first,
                Reason::HeldAfterAcquisitionFailure,
                format!(
                    "instance {} not isolated: acquisition did not complete ({}) and onAcquisitionFailure is Hold",
                    target.instance_id,
                    record.reason.as_deref().unwrap_or("unknown reason")
                ),
            );
        }
    }
    Action::Run(first)
}

/// The capture waits for a CaptureApproval (a CapturePolicy in Approval mode created it) and has none yet.
pub fn awaiting_approval(spec: &ForensicCaptureSpec, status: &ForensicCaptureStatus) -> bool {
    spec.requires_approval && status.approval.is_none()
}

/// Why a step that runs a command on the instance cannot run there, if it cannot: the same answer for a
/// capture and for a dry run's plan.
pub fn agent_skip(step: Step, target: &TargetFacts) -> Option<(Reason, String)> {
    let info = step.info();
    if info.needs != Needs::LinuxAgent {
        return None;
    }
    let instance = &target.instance_id;
    // The on-instance scripts are bash; a Windows instance must never be sent them.
    if let Some(platform) = target.platform.as_deref().filter(|p| p.to_ascii_lowercase().contains("windows")) {
        return Some((Reason::UnsupportedPlatform, format!("instance {instance} runs {platform}: {} acquisition exists for Linux only, so no command was sent", info.name)));
    }
    if target.state.as_deref() != Some("running") {
        let state = target.state.as_deref().unwrap_or("in an unknown state");
        return Some((Reason::InstanceNotRunning, format!("instance {instance} is {state}: {} acquisition needs a running instance", info.name)));
    }
    if let Some(denied) = &target.ssm_access_denied {
        return Some((Reason::AccessDenied, format!("instance {instance}: cannot ask SSM whether it is a managed node ({denied}): {} acquisition skipped", info.name)));
    }
    if target.ssm_managed != Some(true) {
        return Some((Reason::NotSsmManaged, format!("instance {instance} is not an SSM managed node with an online agent: {} acquisition skipped", info.name)));
    }
    None
}

/// The label that selects a quarantined pod (pod targets); its value is the capture's UID.
pub const QUARANTINE_LABEL: &str = "forensic-capture.dev/quarantine";

/// The quarantine NetworkPolicy's name: one per capture, so a second capture of the same pod has its own.
pub fn quarantine_policy_name(capture_uid: &str) -> String {
    format!("forensic-capture-quarantine-{capture_uid}")
}

/// What an action contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainmentScope {
    /// The EC2 instance (for a pod target, its node's instance: only with spec.pod.isolateNode).
    Instance,
    /// A pod target and its node in the cluster; not part of the playbook for other targets.
    Pod,
}

/// Whether an action runs for this capture: Ok(true) it does; Ok(false) it does not belong to this kind of
/// target and leaves no record; Err(why) it is recorded as not needed, saying why.
pub fn containment_applies(scope: ContainmentScope, spec: &crate::api::ForensicCaptureSpec) -> Result<bool, String> {
    let isolate_node = spec.pod.as_ref().is_some_and(|p| p.isolate_node);
    match (scope, &spec.target.pod_ref) {
        (ContainmentScope::Pod, pod) => Ok(pod.is_some()),
        (ContainmentScope::Instance, None) => Ok(true),
        (ContainmentScope::Instance, Some(_)) if isolate_node => Ok(true),
        (ContainmentScope::Instance, Some(pod)) => Err(format!(
            "the target is pod {}/{}: its node's instance is contained only with spec.pod.isolateNode (isolating a node cuts every pod on it)",
            pod.namespace, pod.name
        )),
    }
}

/// Why memory cannot be acquired from this instance, if it cannot (`avml_configured`: an AVML location and
/// SHA-256 are set for its architecture): the same answer for the memory step and a dry run's plan.
pub fn memory_blocker(target: &TargetFacts, avml_configured: bool) -> Option<(Reason, String)> {
    let instance = &target.instance_id;
    let architecture = target.architecture.as_deref().unwrap_or_default();
    if !matches!(architecture, "x86_64" | "arm64") {
        return Some((Reason::UnsupportedArchitecture, format!("instance {instance} is {architecture:?}: AVML acquires memory on x86_64 and arm64 only")));
    }
    if !avml_configured {
        return Some((Reason::AvmlNotConfigured, format!("instance {instance} is {architecture}: no AVML location and SHA-256 configured for that architecture")));
    }
    let Some(memory_mib) = target.memory_mib.filter(|&m| m > 0) else {
        return Some((Reason::MemorySizeUnknown, format!("instance {instance}: the instance type's memory size is unknown")));
    };
    if !crate::acquisition::fits_upload_plan(memory_mib as u64) {
        return Some((
            Reason::MemoryExceedsUploadLimits,
            format!("instance {instance} has {memory_mib} MiB of memory: its image would not fit S3's 10,000 parts of at most 5 GiB with the upload plan's margin"),
        ));
    }
    None
}

/// A dry run: resolve the target, record the plan, end. No lock (nothing will act on the instance) and no
/// step.
fn dry_run_action(status: &ForensicCaptureStatus, situation: &Situation) -> Action {
    if situation.deleting || (status.target.is_some() && status.plan.is_some()) {
        return Action::Finish;
    }
    if status.target.is_none() {
        return Action::ResolveTarget;
    }
    Action::Plan
}

/// The first requested acquisition step that ended without its evidence.
fn acquisition_failure<'a>(spec: &ForensicCaptureSpec, status: &'a ForensicCaptureStatus) -> Option<&'a StepRecord> {
    Step::ALL
        .iter()
        .filter(|s| s.group() == Group::Acquired && s.enabled(spec))
        .filter_map(|s| s.record(status))
        .find(|r| matches!(r.state, StepState::Failed | StepState::Skipped))
}

/// The first requested step (in flow order) that failed or was skipped.
fn first_failure<'a>(spec: &ForensicCaptureSpec, status: &'a ForensicCaptureStatus) -> Option<(Step, &'a StepRecord)> {
    Step::ALL
        .iter()
        .filter(|s| s.enabled(spec))
        .filter_map(|&s| s.record(status).map(|r| (s, r)))
        .find(|(_, r)| matches!(r.state, StepState::Failed | StepState::Skipped))
}

/// Why the capture is not progressing right now, when it is waiting on something outside itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: Reason,
    pub message: String,
}

fn desired(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Desired {
    Desired { type_, status, reason: reason.into(), message: message.into() }
}

/// The condition of one group of steps: True when all succeeded.
fn group_condition(group: Group, spec: &ForensicCaptureSpec, status: &ForensicCaptureStatus) -> Desired {
    let (type_, done) = match group {
        Group::Acquired => (ACQUIRED, Reason::Acquired),
        Group::Snapshotted => (SNAPSHOTTED, Reason::Snapshotted),
        Group::Isolated => (ISOLATED, Reason::Isolated),
        Group::HandedOver => (FORENSIC_COPIED, Reason::ForensicCopied),
    };
    let requested: Vec<Step> = Step::ALL.iter().copied().filter(|s| s.group() == group && s.enabled(spec)).collect();
    if requested.is_empty() {
        return desired(type_, false, Reason::NotRequested, "not requested in the spec");
    }
    if let Some(record) = requested.iter().filter_map(|s| s.record(status)).find(|r| matches!(r.state, StepState::Failed | StepState::Skipped)) {
        return desired(type_, false, record.reason.clone().unwrap_or_else(|| "Failed".into()), record.message.clone().unwrap_or_default());
    }
    if requested.iter().all(|&s| state(s, status) == Some(StepState::Succeeded)) {
        let names: Vec<&str> = requested.iter().map(|s| s.name()).collect();
        return desired(type_, true, done, format!("{} complete", names.join(" and ")));
    }
    let running = requested.iter().any(|&s| state(s, status) == Some(StepState::Running));
    desired(type_, false, if running { Reason::InProgress } else { Reason::NotStarted }, "")
}

/// The conditions and phase that the status implies.
pub fn derive(spec: &ForensicCaptureSpec, status: &ForensicCaptureStatus, waiting: Option<&Waiting>) -> (Vec<Desired>, Phase) {
    if spec.dry_run {
        if let Some(derived) = derive_dry_run(spec, status) {
            return derived;
        }
    }
    let mut conditions: Vec<Desired> = Group::ALL.iter().map(|&g| group_condition(g, spec, status)).collect();
    let failure = first_failure(spec, status);
    let complete = status.completed_at.is_some();
    let failed = match failure {
        Some((step, record)) => desired(
            FAILED,
            true,
            record.reason.clone().unwrap_or_else(|| "Failed".into()),
            format!("{} step: {}", step.name(), record.message.clone().unwrap_or_default()),
        ),
        None => desired(FAILED, false, Reason::NoFailure, ""),
    };
    let ready = match (complete, failure, waiting) {
        (true, None, _) => desired(READY, true, Reason::Completed, "every requested step completed"),
        (_, Some(_), _) => desired(READY, false, failed.reason.clone(), failed.message.clone()),
        (false, None, Some(w)) => desired(READY, false, w.reason, w.message.clone()),
        (false, None, None) => desired(READY, false, Reason::InProgress, ""),
    };
    let phase = phase(spec, status, complete, failure.is_some());
    conditions.extend([ready, failed]);
    (conditions, phase)
}

/// A dry run with its plan recorded: Planned, Ready, and every step group saying it did not run. A dry run
/// that ended without a plan (its target could not be resolved) is derived like any capture: Failed.
fn derive_dry_run(spec: &ForensicCaptureSpec, status: &ForensicCaptureStatus) -> Option<(Vec<Desired>, Phase)> {
    let plan = status.plan.as_ref()?;
    let mut conditions: Vec<Desired> = Group::ALL
        .iter()
        .map(|&group| {
            let mut condition = group_condition(group, spec, status);
            if condition.reason != Reason::NotRequested.as_str() {
                condition = desired(condition.type_, false, Reason::DryRun, "dry run: nothing was done; status.plan says what would be");
            }
            condition
        })
        .collect();
    let would_run = plan.steps.iter().filter(|s| s.would == crate::api::StepVerdict::Run).count();
    let message = format!("dry run: {would_run} step(s) would run and {} containment action(s) would change state; nothing was changed (status.plan)",
        plan.containment.iter().filter(|a| a.would == crate::api::ActionVerdict::Change).count());
    let complete = status.completed_at.is_some();
    let ready = if complete { desired(READY, true, Reason::Planned, message) } else { desired(READY, false, Reason::InProgress, "") };
    conditions.extend([ready, desired(FAILED, false, Reason::NoFailure, "")]);
    Some((conditions, if complete { Phase::Planned } else { Phase::Pending }))
}

/// Progress only moves forward: Pending -> Acquiring -> Snapshotted -> Isolated, ending in Isolated, Completed
/// or Failed.
fn phase(spec: &ForensicCaptureSpec, status: &ForensicCaptureStatus, complete: bool, failed: bool) -> Phase {
    let of = |group: Group| Step::ALL.iter().copied().filter(move |s| s.group() == group && s.enabled(spec));
    let succeeded = |group: Group| of(group).next().is_some() && of(group).all(|s| state(s, status) == Some(StepState::Succeeded));
    if complete {
        return if failed {
            Phase::Failed
        } else if of(Group::Isolated).next().is_some() {
            Phase::Isolated
        } else {
            Phase::Completed
        };
    }
    if succeeded(Group::Isolated) {
        return Phase::Isolated;
    }
    let evidence_done =
        Step::ALL.iter().filter(|s| s.group().is_evidence() && s.enabled(spec)).all(|&s| state(s, status).is_some_and(StepState::is_terminal));
    if evidence_done && succeeded(Group::Snapshotted) {
        return Phase::Snapshotted;
    }
    if Step::ALL.iter().any(|s| s.record(status).is_some()) {
        return Phase::Acquiring;
    }
    Phase::Pending
}

#[cfg(test)]
mod tests;
