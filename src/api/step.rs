//! The catalogue of steps: for each, its place in the flow, its spec settings, its record in the status, and
//! the facts the planner's rules need. Adding a step is one variant in `steps!`, one arm in each match below
//! (the compiler points at every one), its settings in `StepSpecs`, its record in `Steps`, and its executor in
//! `controller/steps/`.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::{DiskSpec, ForensicCaptureSpec, ForensicCaptureStatus, IsolationSpec, StepRecord, StepToggle};

macro_rules! steps {
    ($($variant:ident),* $(,)?) => {
        /// One step of a capture.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Step {
            $($variant,)*
        }

        impl Step {
            /// Every step, in flow order: the order of declaration, so no list can leave one out.
            pub const ALL: &'static [Step] = &[$(Step::$variant,)*];
        }
    };
}

// Flow order: volatile data changes fastest, then memory, then disk snapshots; containment comes after every
// step that takes evidence; the hand-over of snapshot copies to a forensic account follows it, so that copying
// (hours, for large volumes) never delays containment.
// A pod target's container checkpoints come right after the volatile data (a container's memory changes as
// fast), and their removal from the node right after: the archives hold the containers' secrets.
steps!(Volatile, Checkpoint, CheckpointRemoval, Memory, Disk, Isolation, ForensicCopy);

/// The condition a step's outcome counts toward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Evidence taken through the instance (Acquired). After a failure here, `onAcquisitionFailure` decides
    /// whether containment runs.
    Acquired,
    /// Evidence taken from outside the instance (Snapshotted).
    Snapshotted,
    /// Containment (Isolated): starts only after every evidence step has ended.
    Isolated,
    /// Copies of evidence already taken, handed to a forensic account (ForensicCopied). Takes nothing from
    /// the instance, so it waits for nothing but the snapshots.
    HandedOver,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Acquired, Group::Snapshotted, Group::Isolated, Group::HandedOver];

    /// Takes evidence from the instance or its volumes (containment waits for these).
    pub fn is_evidence(self) -> bool {
        matches!(self, Group::Acquired | Group::Snapshotted)
    }
}

/// What a step needs of the instance before it starts; without it the step is skipped with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Works from outside the instance, whatever its state.
    Nothing,
    /// Runs a bash script through SSM: a running Linux instance with an online agent.
    LinuxAgent,
}

/// The facts about a step that the planner, the status and the Events use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepInfo {
    /// Lower-case name: the key in status.steps, in SSM command comments and in messages.
    pub name: &'static str,
    /// Capitalised name, for Event reasons (`<Title>Started`) and actions.
    pub title: &'static str,
    pub group: Group,
    pub needs: Needs,
}

impl Step {
    pub const fn info(self) -> StepInfo {
        match self {
            Step::Volatile => StepInfo { name: "volatile", title: "Volatile", group: Group::Acquired, needs: Needs::LinuxAgent },
            Step::Checkpoint => StepInfo { name: "checkpoint", title: "Checkpoint", group: Group::Acquired, needs: Needs::LinuxAgent },
            Step::CheckpointRemoval => StepInfo { name: "checkpointRemoval", title: "CheckpointRemoval", group: Group::Acquired, needs: Needs::LinuxAgent },
            Step::Memory => StepInfo { name: "memory", title: "Memory", group: Group::Acquired, needs: Needs::LinuxAgent },
            Step::Disk => StepInfo { name: "disk", title: "Disk", group: Group::Snapshotted, needs: Needs::Nothing },
            Step::Isolation => StepInfo { name: "isolation", title: "Isolation", group: Group::Isolated, needs: Needs::Nothing },
            Step::ForensicCopy => StepInfo { name: "forensicCopy", title: "ForensicCopy", group: Group::HandedOver, needs: Needs::Nothing },
        }
    }

    pub const fn name(self) -> &'static str {
        self.info().name
    }

    pub const fn title(self) -> &'static str {
        self.info().title
    }

    pub fn group(self) -> Group {
        self.info().group
    }

    pub fn enabled(self, spec: &ForensicCaptureSpec) -> bool {
        let steps = &spec.steps;
        match self {
            Step::Volatile => steps.volatile.enabled,
            // Container checkpoints: asked for in spec.pod, of a pod target only.
            Step::Checkpoint | Step::CheckpointRemoval => spec.target.pod_ref.is_some() && spec.pod.as_ref().is_some_and(|p| p.checkpoint),
            Step::Memory => steps.memory.enabled,
            Step::Disk => steps.disk.enabled,
            Step::Isolation => steps.isolation.enabled,
            // Copies of snapshots: only when there are snapshots to copy.
            Step::ForensicCopy => steps.disk.enabled && steps.disk.forensic_copy.is_some(),
        }
    }

    pub fn record(self, status: &ForensicCaptureStatus) -> Option<&StepRecord> {
        let steps = &status.steps;
        match self {
            Step::Volatile => steps.volatile.as_ref(),
            Step::Checkpoint => steps.checkpoint.as_ref(),
            Step::CheckpointRemoval => steps.checkpoint_removal.as_ref(),
            Step::Memory => steps.memory.as_ref(),
            Step::Disk => steps.disk.as_ref(),
            Step::Isolation => steps.isolation.as_ref(),
            Step::ForensicCopy => steps.forensic_copy.as_ref(),
        }
    }

    pub fn record_mut(self, status: &mut ForensicCaptureStatus) -> &mut Option<StepRecord> {
        let steps = &mut status.steps;
        match self {
            Step::Volatile => &mut steps.volatile,
            Step::Checkpoint => &mut steps.checkpoint,
            Step::CheckpointRemoval => &mut steps.checkpoint_removal,
            Step::Memory => &mut steps.memory,
            Step::Disk => &mut steps.disk,
            Step::Isolation => &mut steps.isolation,
            Step::ForensicCopy => &mut steps.forensic_copy,
        }
    }

    /// Turns the step on or off in a spec (tests and fixtures build specs step by step).
    pub fn set_enabled(self, spec: &mut ForensicCaptureSpec, enabled: bool) {
        let steps = &mut spec.steps;
        match self {
            Step::Volatile => steps.volatile.enabled = enabled,
            Step::Checkpoint | Step::CheckpointRemoval => spec.pod.get_or_insert_with(Default::default).checkpoint = enabled,
            Step::Memory => steps.memory.enabled = enabled,
            Step::Disk => steps.disk.enabled = enabled,
            Step::Isolation => steps.isolation.enabled = enabled,
            Step::ForensicCopy => steps.disk.forensic_copy = enabled.then(Default::default),
        }
    }
}

/// The spec's step settings (flattened into the spec: `spec.steps.memory`, `spec.steps.volatile`, ...).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepSpecs {
    /// Full physical memory image, streamed to S3 (never written to the instance's disks).
    #[serde(default)]
    pub memory: StepToggle,

    /// Volatile data triage: processes, sockets, open files, kernel modules, users and logins, persistence,
    /// deleted binaries, recent temp files and shell histories.
    #[serde(default)]
    pub volatile: StepToggle,

    /// EBS snapshots of the instance's volumes (crash-consistent, one CreateSnapshots call).
    #[serde(default)]
    pub disk: DiskSpec,

    /// Network isolation after the evidence steps.
    #[serde(default)]
    pub isolation: IsolationSpec,
}

/// Progress of every step.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Steps {
    /// Volatile data (and kernel symbol material) through SSM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volatile: Option<StepRecord>,
    /// Container checkpoints of a pod target, through the kubelet, uploaded through SSM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<StepRecord>,
    /// The checkpoint archives removed from the node once their uploads were verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_removal: Option<StepRecord>,
    /// Memory image through SSM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<StepRecord>,
    /// EBS snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<StepRecord>,
    /// Network isolation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<StepRecord>,
    /// Snapshot copies in the forensic account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forensic_copy: Option<StepRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_its_own_name_toggle_and_record() {
        let mut names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Step::ALL.len());
        let mut status = ForensicCaptureStatus::default();
        for (i, &step) in Step::ALL.iter().enumerate() {
            *step.record_mut(&mut status) = Some(StepRecord { command_id: Some(i.to_string()), ..Default::default() });
        }
        for (i, &step) in Step::ALL.iter().enumerate() {
            assert_eq!(step.record(&status).and_then(|r| r.command_id.clone()), Some(i.to_string()), "{step:?} has a record of its own");
            // A pod target: the only kind whose containers can be checkpointed.
            let mut spec: ForensicCaptureSpec = serde_yaml::from_str("caseId: C\ntarget: {podRef: {namespace: n, name: p}}\n").unwrap();
            for &other in Step::ALL {
                other.set_enabled(&mut spec, true);
            }
            step.set_enabled(&mut spec, false);
            // Copies of snapshots need the snapshots: turning disk off turns them off too.
            // Checkpoints and their removal from the node are one request (spec.pod.checkpoint).
            let expected: Vec<&Step> = match step {
                Step::Disk => vec![&Step::Disk, &Step::ForensicCopy],
                Step::Checkpoint | Step::CheckpointRemoval => vec![&Step::Checkpoint, &Step::CheckpointRemoval],
                _ => vec![&step],
            };
            assert_eq!(Step::ALL.iter().filter(|s| !s.enabled(&spec)).collect::<Vec<_>>(), expected, "{step:?} has a toggle of its own");
        }
    }

    #[test]
    fn containment_comes_after_every_evidence_step() {
        let first_containment = Step::ALL.iter().position(|s| !s.group().is_evidence()).unwrap_or(Step::ALL.len());
        assert!(Step::ALL[first_containment..].iter().all(|s| !s.group().is_evidence()));
    }
}
