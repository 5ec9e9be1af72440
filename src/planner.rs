//! The pure planner: from the spec, the recorded status and what the controller knows right now, decide the
//! next action and derive the conditions and phase. No IO happens here; every forensic ordering rule does.
//!
//! Ordering: volatile data (changes fastest), then memory, then disk snapshots, then isolation. Isolation
//! never starts before every requested evidence step has ended; after a failed or skipped acquisition it
//! runs only when `onAcquisitionFailure` is Isolate. A step that has started always runs to its end, even
//! while the capture is being deleted, so nothing is left half-done or unrecorded.

use crate::api::{
    AcquisitionFailurePolicy, ForensicCaptureSpec, ForensicCaptureStatus, Phase, StepRecord, StepState,
    conditions::{ACQUIRED, Desired, FAILED, ISOLATED, READY, SNAPSHOTTED},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Volatile,
    Memory,
    Disk,
    Isolation,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Volatile, Step::Memory, Step::Disk, Step::Isolation];

    pub fn name(self) -> &'static str {
        match self {
            Step::Volatile => "volatile",
            Step::Memory => "memory",
            Step::Disk => "disk",
            Step::Isolation => "isolation",
        }
    }

    pub fn enabled(self, spec: &ForensicCaptureSpec) -> bool {
        match self {
            Step::Volatile => spec.volatile.enabled,
            Step::Memory => spec.memory.enabled,
            Step::Disk => spec.disk.enabled,
            Step::Isolation => spec.isolation.enabled,
        }
    }

    pub fn record(self, status: &ForensicCaptureStatus) -> Option<&StepRecord> {
        let steps = &status.steps;
        match self {
            Step::Volatile => steps.volatile.as_ref(),
            Step::Memory => steps.memory.as_ref(),
            Step::Disk => steps.disk.as_ref(),
            Step::Isolation => steps.isolation.as_ref(),
        }
    }

    pub fn record_mut(self, status: &mut ForensicCaptureStatus) -> &mut Option<StepRecord> {
        let steps = &mut status.steps;
        match self {
            Step::Volatile => &mut steps.volatile,
            Step::Memory => &mut steps.memory,
            Step::Disk => &mut steps.disk,
            Step::Isolation => &mut steps.isolation,
        }
    }

    fn state(self, status: &ForensicCaptureStatus) -> Option<StepState> {
        self.record(status).map(|r| r.state)
    }

    fn is_acquisition(self) -> bool {
        matches!(self, Step::Volatile | Step::Memory)
    }
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
    /// Start or continue a step.
    Run(Step),
    /// Record that a step will not run, and why.
    Skip { step: Step, reason: &'static str, message: String },
    /// Every requested step has ended: record completion and release the lock.
    Finish,
}

pub mod reasons {
    pub const INSTANCE_NOT_RUNNING: &str = "InstanceNotRunning";
    pub const NOT_SSM_MANAGED: &str = "NotSsmManaged";
    pub const UNSUPPORTED_PLATFORM: &str = "UnsupportedPlatform";
    pub const HELD_AFTER_ACQUISITION_FAILURE: &str = "HeldAfterAcquisitionFailure";
    pub const CAPTURE_DELETED: &str = "CaptureDeleted";
}

pub fn next_action(spec: &ForensicCaptureSpec, status: &ForensicCaptureStatus, situation: &Situation) -> Action {
    if status.completed_at.is_some() {
        return Action::Nothing;
    }
    let pending: Vec<Step> =
        Step::ALL.into_iter().filter(|s| s.enabled(spec) && !s.state(status).is_some_and(StepState::is_terminal)).collect();
    let Some(&first) = pending.first() else {
        return Action::Finish;
    };
    if situation.deleting {
        // Drain: a started step runs to its end; the rest are recorded as not done.
        if let Some(&running) = pending.iter().find(|s| s.state(status) == Some(StepState::Running)) {
            return Action::Run(running);
        }
        return Action::Skip {
            step: first,
            reason: reasons::CAPTURE_DELETED,
            message: format!("the ForensicCapture was deleted before the {} step started", first.name()),
        };
    }
    let Some(target) = status.target.as_ref() else {
        return Action::ResolveTarget;
    };
    if !situation.lock_held {
        return Action::AcquireLock;
    }
    let started = first.record(status).is_some();
    match first {
        Step::Volatile | Step::Memory if !started => {
            // The on-instance scripts are bash; a Windows instance must never be sent them.
            if let Some(platform) = target.platform.as_deref().filter(|p| p.to_ascii_lowercase().contains("windows")) {
                return Action::Skip {
                    step: first,
                    reason: reasons::UNSUPPORTED_PLATFORM,
                    message: format!(
                        "instance {} runs {platform}: {} acquisition exists for Linux only, so no command was sent",
                        target.instance_id,
                        first.name()
                    ),
                };
            }
            let running = target.state.as_deref() == Some("running");
            if !running {
                return Action::Skip {
                    step: first,
                    reason: reasons::INSTANCE_NOT_RUNNING,
                    message: format!(
                        "instance {} is {}: {} acquisition needs a running instance",
                        target.instance_id,
                        target.state.as_deref().unwrap_or("in an unknown state"),
                        first.name()
                    ),
                };
            }
            if target.ssm_managed != Some(true) {
                return Action::Skip {
                    step: first,
                    reason: reasons::NOT_SSM_MANAGED,
                    message: format!(
                        "instance {} is not an SSM managed node with an online agent: {} acquisition skipped",
                        target.instance_id,
                        first.name()
                    ),
                };
            }
            Action::Run(first)
        }
        Step::Isolation if !started => {
            let failed = acquisition_failure(spec, status);
            match (failed, spec.isolation.on_acquisition_failure) {
                (Some(record), AcquisitionFailurePolicy::Hold) => Action::Skip {
                    step: Step::Isolation,
                    reason: reasons::HELD_AFTER_ACQUISITION_FAILURE,
                    message: format!(
                        "instance {} not isolated: acquisition did not complete ({}) and onAcquisitionFailure is Hold",
                        target.instance_id,
                        record.reason.as_deref().unwrap_or("unknown reason")
                    ),
                },
                _ => Action::Run(Step::Isolation),
            }
        }
        step => Action::Run(step),
    }
}

/// The first requested acquisition step that ended without its evidence.
fn acquisition_failure<'a>(spec: &ForensicCaptureSpec, status: &'a ForensicCaptureStatus) -> Option<&'a StepRecord> {
    Step::ALL
        .into_iter()
        .filter(|s| s.is_acquisition() && s.enabled(spec))
        .filter_map(|s| s.record(status))
        .find(|r| matches!(r.state, StepState::Failed | StepState::Skipped))
}

/// The first requested step (in flow order) that failed or was skipped.
fn first_failure<'a>(spec: &ForensicCaptureSpec, status: &'a ForensicCaptureStatus) -> Option<(Step, &'a StepRecord)> {
    Step::ALL
        .into_iter()
        .filter(|s| s.enabled(spec))
        .filter_map(|s| s.record(status).map(|r| (s, r)))
        .find(|(_, r)| matches!(r.state, StepState::Failed | StepState::Skipped))
}

/// Why the capture is not progressing right now, when it is waiting on something outside itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: &'static str,
    pub message: String,
}

/// Conditions of one group of steps: True when all succeeded (or none requested).
fn group_condition(type_: &'static str, steps: &[Step], spec: &ForensicCaptureSpec, status: &ForensicCaptureStatus) -> Desired {
    let requested: Vec<Step> = steps.iter().copied().filter(|s| s.enabled(spec)).collect();
    let done_reason = match type_ {
        ACQUIRED => "Acquired",
        SNAPSHOTTED => "Snapshotted",
        _ => "Isolated",
    };
    if requested.is_empty() {
        return Desired { type_, status: false, reason: "NotRequested".into(), message: "not requested in the spec".into() };
    }
    if let Some(record) = requested.iter().filter_map(|s| s.record(status)).find(|r| matches!(r.state, StepState::Failed | StepState::Skipped)) {
        return Desired {
            type_,
            status: false,
            reason: record.reason.clone().unwrap_or_else(|| "Failed".into()),
            message: record.message.clone().unwrap_or_default(),
        };
    }
    if requested.iter().all(|s| s.state(status) == Some(StepState::Succeeded)) {
        let names: Vec<&str> = requested.iter().map(|s| s.name()).collect();
        return Desired { type_, status: true, reason: done_reason.into(), message: format!("{} complete", names.join(" and ")) };
    }
    let running = requested.iter().any(|s| s.state(status) == Some(StepState::Running));
    Desired {
        type_,
        status: false,
        reason: if running { "InProgress" } else { "NotStarted" }.into(),
        message: String::new(),
    }
}

/// The conditions and phase that the status implies.
pub fn derive(spec: &ForensicCaptureSpec, status: &ForensicCaptureStatus, waiting: Option<&Waiting>) -> (Vec<Desired>, Phase) {
    let acquired = group_condition(ACQUIRED, &[Step::Volatile, Step::Memory], spec, status);
    let snapshotted = group_condition(SNAPSHOTTED, &[Step::Disk], spec, status);
    let isolated = group_condition(ISOLATED, &[Step::Isolation], spec, status);
    let failure = first_failure(spec, status);
    let complete = status.completed_at.is_some();
    let failed = match failure {
        Some((step, record)) => Desired {
            type_: FAILED,
            status: true,
            reason: record.reason.clone().unwrap_or_else(|| "Failed".into()),
            message: format!("{} step: {}", step.name(), record.message.clone().unwrap_or_default()),
        },
        None => Desired { type_: FAILED, status: false, reason: "NoFailure".into(), message: String::new() },
    };
    let ready = match (complete, failure, waiting) {
        (true, None, _) => Desired { type_: READY, status: true, reason: "Completed".into(), message: "every requested step completed".into() },
        (_, Some(_), _) => Desired { type_: READY, status: false, reason: failed.reason.clone(), message: failed.message.clone() },
        (false, None, Some(w)) => Desired { type_: READY, status: false, reason: w.reason.into(), message: w.message.clone() },
        (false, None, None) => Desired { type_: READY, status: false, reason: "InProgress".into(), message: String::new() },
    };
    let phase = phase(spec, status, complete, failure.is_some());
    (vec![acquired, snapshotted, isolated, ready, failed], phase)
}

/// Progress only moves forward: Pending -> Acquiring -> Snapshotted -> Isolated, ending in Isolated, Completed
/// or Failed.
fn phase(spec: &ForensicCaptureSpec, status: &ForensicCaptureStatus, complete: bool, failed: bool) -> Phase {
    if complete {
        return if failed {
            Phase::Failed
        } else if spec.isolation.enabled {
            Phase::Isolated
        } else {
            Phase::Completed
        };
    }
    if Step::Isolation.state(status) == Some(StepState::Succeeded) {
        return Phase::Isolated;
    }
    let evidence_done = [Step::Volatile, Step::Memory, Step::Disk]
        .into_iter()
        .filter(|s| s.enabled(spec))
        .all(|s| s.state(status).is_some_and(StepState::is_terminal));
    if evidence_done && Step::Disk.state(status) == Some(StepState::Succeeded) {
        return Phase::Snapshotted;
    }
    if Step::ALL.into_iter().any(|s| s.record(status).is_some()) {
        return Phase::Acquiring;
    }
    Phase::Pending
}

#[cfg(test)]
mod tests;
