//! Exhaustive planner tests from minimal fixtures: every phase, every failure policy, resuming from every
//! recorded status.

use super::*;
use crate::api::{Phase, StepRecord, StepState, TargetFacts};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn spec(yaml: &str) -> ForensicCaptureSpec {
    serde_yaml::from_str(yaml).expect("fixture spec")
}

fn full() -> ForensicCaptureSpec {
    spec("caseId: INC-1\ntarget: {instanceId: i-0123456789abcdef0}\ndisk: {forensicCopy: {}}\n")
}

struct Fixture(ForensicCaptureStatus);

impl Fixture {
    fn new() -> Self {
        Fixture(ForensicCaptureStatus::default())
    }
    fn resolved(mut self, state: &str, managed: bool) -> Self {
        self.0.target = Some(TargetFacts {
            instance_id: "i-0123456789abcdef0".into(),
            region: "eu-west-1".into(),
            state: Some(state.into()),
            ssm_managed: Some(managed),
            ..Default::default()
        });
        self
    }
    fn platform(mut self, platform: &str) -> Self {
        self.0.target.as_mut().expect("resolved first").platform = Some(platform.into());
        self
    }
    fn step(mut self, step: Step, state: StepState, reason: Option<&str>) -> Self {
        *step.record_mut(&mut self.0) =
            Some(StepRecord { state, reason: reason.map(String::from), message: reason.map(|r| format!("because {r}")), ..Default::default() });
        self
    }
    fn done(self, step: Step) -> Self {
        self.step(step, StepState::Succeeded, None)
    }
    fn completed(mut self) -> Self {
        self.0.completed_at = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        self
    }
}

fn locked() -> Situation {
    Situation { lock_held: true, deleting: false }
}

fn run(step: Step) -> Action {
    Action::Run(step)
}

fn skip_reason(action: &Action) -> Option<(Step, Reason)> {
    match action {
        Action::Skip { step, reason, .. } => Some((*step, *reason)),
        _ => None,
    }
}

#[test]
fn a_new_capture_resolves_its_target_first() {
    assert_eq!(next_action(&full(), &Fixture::new().0, &Situation::default()), Action::ResolveTarget);
}

#[test]
fn a_pod_target_with_checkpoints_takes_them_after_the_volatile_data_and_removes_them_before_memory() {
    let spec = spec("caseId: INC-1\ntarget: {podRef: {namespace: shop, name: p}}\npod: {checkpoint: true}\n");
    let mut f = Fixture::new().resolved("running", true);
    let mut order = Vec::new();
    while let Action::Run(step) = next_action(&spec, &f.0, &locked()) {
        order.push(step);
        f = f.done(step);
    }
    assert_eq!(order, [Step::Volatile, Step::Checkpoint, Step::CheckpointRemoval, Step::Memory, Step::Disk, Step::Isolation]);
}

#[test]
fn no_step_starts_without_the_instance_lock() {
    let status = Fixture::new().resolved("running", true).0;
    assert_eq!(next_action(&full(), &status, &Situation::default()), Action::AcquireLock);
}

#[test]
fn the_full_flow_runs_volatile_memory_disk_isolation_in_order() {
    let spec = full();
    let mut f = Fixture::new().resolved("running", true);
    // An instance target: every step but the container checkpoints, which only a pod target has.
    let steps: Vec<Step> = Step::ALL.iter().copied().filter(|s| s.enabled(&spec)).collect();
    assert_eq!(steps, [Step::Volatile, Step::Memory, Step::Disk, Step::Isolation, Step::ForensicCopy]);
    for step in steps {
        assert_eq!(next_action(&spec, &f.0, &locked()), run(step));
        f = f.step(step, StepState::Running, None);
        assert_eq!(next_action(&spec, &f.0, &locked()), run(step), "a running {step:?} step is resumed");
        f = f.done(step);
    }
    assert_eq!(next_action(&spec, &f.0, &locked()), Action::Finish);
    assert_eq!(next_action(&spec, &f.completed().0, &locked()), Action::Nothing);
}

#[test]
fn isolation_never_precedes_a_pending_evidence_step() {
    let spec = full();
    for unfinished in [Step::Volatile, Step::Memory, Step::Disk] {
        for state in [None, Some(StepState::Running)] {
            let mut f = Fixture::new().resolved("running", true);
            for step in [Step::Volatile, Step::Memory, Step::Disk] {
                if step != unfinished {
                    f = f.done(step);
                }
            }
            if let Some(s) = state {
                f = f.step(unfinished, s, None);
            }
            let action = next_action(&spec, &f.0, &locked());
            assert_ne!(action, run(Step::Isolation), "{unfinished:?} in {state:?}");
        }
    }
}

#[test]
fn disabled_steps_are_not_run() {
    let spec = spec("caseId: C\ntarget: {instanceId: i-0123456789abcdef0}\nmemory: {enabled: false}\nvolatile: {enabled: false}\n");
    let f = Fixture::new().resolved("running", true);
    assert_eq!(next_action(&spec, &f.0, &locked()), run(Step::Disk));
    let only_isolation = self::spec(
        "caseId: C\ntarget: {instanceId: i-0123456789abcdef0}\nmemory: {enabled: false}\nvolatile: {enabled: false}\ndisk: {enabled: false}\n",
    );
    assert_eq!(next_action(&only_isolation, &f.0, &locked()), run(Step::Isolation));
    let nothing = self::spec(
        "caseId: C\ntarget: {instanceId: i-0123456789abcdef0}\nmemory: {enabled: false}\nvolatile: {enabled: false}\ndisk: {enabled: false}\nisolation: {enabled: false}\n",
    );
    assert_eq!(next_action(&nothing, &Fixture::new().0, &Situation::default()), Action::Finish);
}

#[test]
fn an_unmanaged_instance_skips_acquisition_but_gets_disk_and_isolation() {
    let spec = full();
    let mut f = Fixture::new().resolved("running", false);
    for step in [Step::Volatile, Step::Memory] {
        let action = next_action(&spec, &f.0, &locked());
        assert_eq!(skip_reason(&action), Some((step, Reason::NotSsmManaged)));
        f = f.step(step, StepState::Skipped, Some(Reason::NotSsmManaged.as_str()));
    }
    assert_eq!(next_action(&spec, &f.0, &locked()), run(Step::Disk));
    f = f.done(Step::Disk);
    assert_eq!(next_action(&spec, &f.0, &locked()), run(Step::Isolation), "default policy Isolate");
}

#[test]
fn a_stopped_instance_skips_acquisition_as_not_running() {
    let f = Fixture::new().resolved("stopped", true);
    let action = next_action(&full(), &f.0, &locked());
    assert_eq!(skip_reason(&action), Some((Step::Volatile, Reason::InstanceNotRunning)));
    match action {
        Action::Skip { message, .. } => assert!(message.contains("i-0123456789abcdef0") && message.contains("stopped")),
        _ => unreachable!(),
    }
}

#[test]
fn hold_policy_keeps_a_failed_acquisition_unisolated() {
    let hold = spec("caseId: C\ntarget: {instanceId: i-0123456789abcdef0}\nisolation: {onAcquisitionFailure: Hold}\n");
    for failed in [Step::Volatile, Step::Memory] {
        for state in [StepState::Failed, StepState::Skipped] {
            let mut f = Fixture::new().resolved("running", true);
            for step in [Step::Volatile, Step::Memory, Step::Disk] {
                f = if step == failed { f.step(step, state, Some("CommandFailed")) } else { f.done(step) };
            }
            let action = next_action(&hold, &f.0, &locked());
            assert_eq!(skip_reason(&action), Some((Step::Isolation, Reason::HeldAfterAcquisitionFailure)), "{failed:?} {state:?}");
            assert_eq!(next_action(&full(), &f.0, &locked()), run(Step::Isolation), "Isolate policy isolates anyway");
        }
    }
}

#[test]
fn hold_policy_isolates_when_acquisition_succeeded_and_disk_failed() {
    let hold = spec("caseId: C\ntarget: {instanceId: i-0123456789abcdef0}\nisolation: {onAcquisitionFailure: Hold}\n");
    let f = Fixture::new().resolved("running", true).done(Step::Volatile).done(Step::Memory).step(Step::Disk, StepState::Failed, Some("SnapshotFailed"));
    assert_eq!(next_action(&hold, &f.0, &locked()), run(Step::Isolation));
}

#[test]
fn a_failed_step_does_not_stop_later_steps() {
    let f = Fixture::new().resolved("running", true).step(Step::Volatile, StepState::Failed, Some("CommandTimedOut"));
    assert_eq!(next_action(&full(), &f.0, &locked()), run(Step::Memory));
}

#[test]
fn deleting_drains_running_steps_and_starts_none() {
    let deleting = Situation { lock_held: true, deleting: true };
    let f = Fixture::new().resolved("running", true).done(Step::Volatile).step(Step::Memory, StepState::Running, None);
    assert_eq!(next_action(&full(), &f.0, &deleting), run(Step::Memory));
    let f = f.done(Step::Memory);
    let action = next_action(&full(), &f.0, &deleting);
    assert_eq!(skip_reason(&action), Some((Step::Disk, Reason::CaptureDeleted)));
    let unresolved = next_action(&full(), &Fixture::new().0, &Situation { lock_held: false, deleting: true });
    assert_eq!(skip_reason(&unresolved), Some((Step::Volatile, Reason::CaptureDeleted)));
}

/// Every combination of recorded step states (five per step: none, Running, Succeeded, Failed, Skipped) of the
/// enabled steps, for every set of enabled steps a spec can ask for, both failure policies, managed and
/// unmanaged instances, deleting or not: the planner's answer must obey every ordering rule. A step the spec
/// does not enable never has a record (the spec cannot change), so only enabled steps' states vary. The
/// target is a pod, the one kind that can enable every step. The steps are enumerated from `Step::ALL`, so a
/// new step is covered without touching this test.
#[test]
fn every_recorded_status_under_every_spec_obeys_the_ordering_rules() {
    let states = [None, Some(StepState::Running), Some(StepState::Succeeded), Some(StepState::Failed), Some(StepState::Skipped)];
    let steps = Step::ALL;
    let mut checked = 0;
    let mut expected = 0;
    let mut seen = std::collections::HashSet::new();
    for enabled_mask in 0..(1u32 << steps.len()) {
        for policy in [AcquisitionFailurePolicy::Isolate, AcquisitionFailurePolicy::Hold] {
            let mut spec = spec("caseId: INC-1\ntarget: {podRef: {namespace: shop, name: p}}\ndisk: {forensicCopy: {}}\n");
            spec.steps.isolation.on_acquisition_failure = policy;
            for (i, &step) in steps.iter().enumerate() {
                step.set_enabled(&mut spec, enabled_mask & (1 << i) != 0);
            }
            let enabled: Vec<Step> = steps.iter().copied().filter(|s| s.enabled(&spec)).collect();
            if !seen.insert((enabled.clone(), policy == AcquisitionFailurePolicy::Hold)) {
                continue; // steps that share a toggle, or need another step, give the same set more than once
            }
            expected += states.len().pow(enabled.len() as u32) * 4;
            for combination in 0..states.len().pow(enabled.len() as u32) {
                let recorded: Vec<(Step, Option<StepState>)> = steps
                    .iter()
                    .map(|&step| match enabled.iter().position(|&e| e == step) {
                        Some(i) => (step, states[combination / states.len().pow(i as u32) % states.len()]),
                        None => (step, None),
                    })
                    .collect();
                for managed in [true, false] {
                    for deleting in [false, true] {
                        let mut f = Fixture::new().resolved("running", managed);
                        for &(step, state) in &recorded {
                            if let Some(s) = state {
                                f = f.step(step, s, Some("R"));
                            }
                        }
                        let action = next_action(&spec, &f.0, &Situation { lock_held: true, deleting });
                        check_rules(&spec, &recorded, managed, deleting, &action);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(seen.iter().any(|(e, _)| e.len() == steps.len()), "the set of every step is among those checked");
    assert_eq!(checked, expected);
}

fn check_rules(spec: &ForensicCaptureSpec, recorded: &[(Step, Option<StepState>)], managed: bool, deleting: bool, action: &Action) {
    let context = format!("{recorded:?} managed={managed} deleting={deleting} enabled={:?}", Step::ALL.iter().filter(|s| s.enabled(spec)).collect::<Vec<_>>());
    let open: Vec<(Step, Option<StepState>)> =
        recorded.iter().copied().filter(|(s, st)| s.enabled(spec) && !st.is_some_and(StepState::is_terminal)).collect();
    let Some(&(first, first_state)) = open.first() else {
        assert_eq!(*action, Action::Finish, "{context}");
        return;
    };
    let acted_on = match action {
        Action::Run(step) => *step,
        Action::Skip { step, .. } => *step,
        other => panic!("{context}: a resolved, locked capture with open steps got {other:?}"),
    };
    assert!(acted_on.enabled(spec), "{context}: a disabled step was acted on");
    if deleting {
        // Drain: only a running step runs; the first open one is recorded as not done.
        match open.iter().find(|(_, st)| *st == Some(StepState::Running)) {
            Some(&(running, _)) => assert_eq!(*action, run(running), "{context}"),
            None => assert_eq!(skip_reason(action), Some((first, Reason::CaptureDeleted)), "{context}"),
        }
        return;
    }
    assert_eq!(acted_on, first, "{context}: the first open step in flow order comes next");
    if first_state == Some(StepState::Running) {
        assert_eq!(*action, run(first), "{context}: a started step runs to its end");
        return;
    }
    if first.info().needs == Needs::LinuxAgent && !managed {
        assert_eq!(skip_reason(action), Some((first, Reason::NotSsmManaged)), "{context}");
        return;
    }
    if first == Step::ForensicCopy && !recorded.contains(&(Step::Disk, Some(StepState::Succeeded))) {
        assert_eq!(skip_reason(action), Some((first, Reason::NoSnapshotsToCopy)), "{context}: no snapshots, nothing to copy");
        return;
    }
    if first.group() == Group::Isolated {
        let evidence_open = recorded.iter().any(|(s, st)| s.enabled(spec) && s.group().is_evidence() && !st.is_some_and(StepState::is_terminal));
        assert!(!evidence_open, "{context}: containment before the evidence ended");
        let acquisition_failed = recorded
            .iter()
            .any(|(s, st)| s.enabled(spec) && s.group() == Group::Acquired && matches!(st, Some(StepState::Failed | StepState::Skipped)));
        if acquisition_failed && spec.steps.isolation.on_acquisition_failure == AcquisitionFailurePolicy::Hold {
            assert_eq!(skip_reason(action), Some((first, Reason::HeldAfterAcquisitionFailure)), "{context}");
            return;
        }
    }
    assert_eq!(*action, run(first), "{context}");
}

#[test]
fn phase_moves_forward_through_the_flow() {
    let spec = full();
    let mut f = Fixture::new();
    let mut phases = vec![derive(&spec, &f.0, None).1];
    f = f.resolved("running", true).step(Step::Volatile, StepState::Running, None);
    phases.push(derive(&spec, &f.0, None).1);
    f = f.done(Step::Volatile).done(Step::Memory).done(Step::Disk);
    phases.push(derive(&spec, &f.0, None).1);
    f = f.done(Step::Isolation);
    phases.push(derive(&spec, &f.0, None).1);
    f = f.done(Step::ForensicCopy).completed();
    phases.push(derive(&spec, &f.0, None).1);
    assert_eq!(phases, vec![Phase::Pending, Phase::Acquiring, Phase::Snapshotted, Phase::Isolated, Phase::Isolated]);
}

#[test]
fn a_capture_without_isolation_ends_completed() {
    let spec = spec("caseId: C\ntarget: {instanceId: i-0123456789abcdef0}\nisolation: {enabled: false}\n");
    let f = Fixture::new().resolved("running", true).done(Step::Volatile).done(Step::Memory).done(Step::Disk).completed();
    let (conditions, phase) = derive(&spec, &f.0, None);
    assert_eq!(phase, Phase::Completed);
    let ready = conditions.iter().find(|c| c.type_ == READY).unwrap();
    assert!(ready.status);
    let isolated = conditions.iter().find(|c| c.type_ == ISOLATED).unwrap();
    assert_eq!((isolated.status, isolated.reason.as_str()), (false, "NotRequested"));
}

#[test]
fn a_failure_names_its_reason_in_failed_ready_and_its_group() {
    let f = Fixture::new()
        .resolved("running", false)
        .step(Step::Volatile, StepState::Skipped, Some("NotSsmManaged"))
        .step(Step::Memory, StepState::Skipped, Some("NotSsmManaged"))
        .done(Step::Disk)
        .done(Step::Isolation)
        .completed();
    let (conditions, phase) = derive(&full(), &f.0, None);
    let by = |t: &str| conditions.iter().find(|c| c.type_ == t).unwrap().clone();
    assert_eq!(phase, Phase::Failed);
    assert_eq!((by(FAILED).status, by(FAILED).reason.as_str()), (true, "NotSsmManaged"));
    assert_eq!((by(READY).status, by(READY).reason.as_str()), (false, "NotSsmManaged"));
    assert_eq!((by(ACQUIRED).status, by(ACQUIRED).reason.as_str()), (false, "NotSsmManaged"));
    assert!(by(SNAPSHOTTED).status);
    assert!(by(ISOLATED).status, "containment happened even though evidence is missing");
}

#[test]
fn waiting_for_the_lock_shows_in_ready() {
    let waiting = Waiting { reason: Reason::WaitingForInstanceLock, message: "held by ns/other".into() };
    let (conditions, phase) = derive(&full(), &Fixture::new().resolved("running", true).0, Some(&waiting));
    let ready = conditions.iter().find(|c| c.type_ == READY).unwrap();
    assert_eq!((ready.status, ready.reason.as_str(), ready.message.as_str()), (false, "WaitingForInstanceLock", "held by ns/other"));
    assert_eq!(phase, Phase::Pending);
}

#[test]
fn windows_instances_are_sent_no_script_and_isolation_follows_the_policy() {
    let status = Fixture::new().resolved("running", true).platform("Windows");
    assert_eq!(skip_reason(&next_action(&full(), &status.0, &locked())), Some((Step::Volatile, Reason::UnsupportedPlatform)));
    let status = status.step(Step::Volatile, StepState::Skipped, Some("UnsupportedPlatform"));
    assert_eq!(skip_reason(&next_action(&full(), &status.0, &locked())), Some((Step::Memory, Reason::UnsupportedPlatform)));
    let status = status.step(Step::Memory, StepState::Skipped, Some("UnsupportedPlatform"));
    assert_eq!(next_action(&full(), &status.0, &locked()), run(Step::Disk));
    let status = status.done(Step::Disk);
    assert_eq!(next_action(&full(), &status.0, &locked()), run(Step::Isolation));
    let hold = spec("caseId: INC-1\ntarget: {instanceId: i-0123456789abcdef0}\nisolation: {onAcquisitionFailure: Hold}\n");
    assert_eq!(skip_reason(&next_action(&hold, &status.0, &locked())), Some((Step::Isolation, Reason::HeldAfterAcquisitionFailure)));
}

#[test]
fn linux_platforms_are_acquired() {
    for platform in ["Linux/UNIX", "Red Hat Enterprise Linux", "SUSE Linux"] {
        let status = Fixture::new().resolved("running", true).platform(platform);
        assert_eq!(next_action(&full(), &status.0, &locked()), run(Step::Volatile), "{platform}");
    }
}
