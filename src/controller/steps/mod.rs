//! The step executors: the side-effecting half of `Action::Run(step)`. Every step looks up what it may already
//! have done (by tag, by command comment, by upload key) before doing it, and saves intent to the status before
//! a side effect whose result could not be found again, so a controller killed at any instant resumes cleanly.

mod disk;
mod forensic_copy;
mod isolation;
mod memory;
mod volatile;

use std::time::Duration;

use super::{failure::StepError, status::Writer, step_context::StepContext};
use crate::api::{ForensicCaptureStatus, Step};

/// What a step asks of the reconcile loop.
#[derive(Debug)]
pub enum Progress {
    /// Something changed: plan again now.
    Continue,
    /// Waiting on AWS or the instance: look again after this long.
    Wait(Duration),
}

/// How often a running command or snapshot is looked at again.
pub const POLL: Duration = Duration::from_secs(2);

/// Runs (or continues) `step`. The one place a step's executor is named.
pub async fn run<'a>(step: Step, sc: &StepContext<'a>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'a>) -> Result<Progress, StepError> {
    // The start is saved with the step's first record: every step saves its intent before its first side
    // effect that a lookup could not find again (an SSM command, a snapshot set, a containment change).
    super::records::start(step, status);
    match step {
        Step::Volatile => volatile::run(sc, status, writer).await,
        Step::Memory => memory::run(sc, status, writer).await,
        Step::Disk => disk::run(sc, status, writer).await,
        Step::Isolation => isolation::run(sc, status, writer).await,
        Step::ForensicCopy => forensic_copy::run(sc, status, writer).await,
    }
}
