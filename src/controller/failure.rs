//! What goes wrong in a step, and the one place where an AWS error class becomes a step outcome.

use crate::{
    api::Reason,
    aws::{AwsError, ErrorClass},
};

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Transient (throttling, 5xx, timeouts, expired credentials, clock skew, API conflicts): the capture is
    /// requeued with per-capture exponential backoff and continues.
    #[error("{message}")]
    Retry {
        message: String,
        #[source]
        source: Option<AwsError>,
    },
    /// This step (or containment action) ends without its result; later steps still run.
    #[error("{reason}: {message}")]
    Failed {
        reason: Reason,
        message: String,
        #[source]
        source: Option<AwsError>,
    },
    /// The capture cannot continue: every unfinished step ends with this reason, and nothing more is done.
    #[error("{reason}: {message}")]
    Abort {
        reason: Reason,
        message: String,
        #[source]
        source: Option<AwsError>,
    },
}

/// How one class of AWS error ends the work at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The step (or action) ends Failed with this reason.
    Fail(Reason),
    /// The whole capture ends with this reason.
    Abort(Reason),
}

/// What each non-transient class of AWS error means for one piece of work. Transient errors are always
/// retried (`ErrorClass::Retryable`), so no policy can turn a throttle into a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnError {
    pub access_denied: Outcome,
    pub instance_not_found: Outcome,
    pub not_found: Outcome,
    pub rejected: Outcome,
}

impl OnError {
    /// A step's AWS call: a permission problem or a vanished instance ends the capture (nothing further
    /// could succeed, and nothing should be attempted half-authorised); anything else ends this step with
    /// `reason`.
    pub const fn step(reason: Reason) -> Self {
        OnError {
            access_denied: Outcome::Abort(Reason::AccessDenied),
            instance_not_found: Outcome::Abort(Reason::InstanceNotFound),
            not_found: Outcome::Fail(reason),
            rejected: Outcome::Fail(reason),
        }
    }

    /// Work whose failure costs only itself, whatever the error (a write-once lock, a containment action):
    /// the other steps or actions still run.
    pub const fn only(reason: Reason) -> Self {
        OnError { access_denied: Outcome::Fail(reason), instance_not_found: Outcome::Fail(reason), not_found: Outcome::Fail(reason), rejected: Outcome::Fail(reason) }
    }

    /// A containment action or its release: it fails on its own, with a reason that says which kind of refusal.
    pub const ACTION: OnError = OnError {
        access_denied: Outcome::Fail(Reason::AccessDenied),
        instance_not_found: Outcome::Fail(Reason::InstanceNotFound),
        not_found: Outcome::Fail(Reason::AwsRequestRejected),
        rejected: Outcome::Fail(Reason::AwsRequestRejected),
    };

    /// The outcome for `error`, or None when it is transient.
    pub fn outcome(&self, error: &AwsError) -> Option<Outcome> {
        match error.class() {
            ErrorClass::Retryable => None,
            ErrorClass::AccessDenied => Some(self.access_denied),
            ErrorClass::InstanceNotFound => Some(self.instance_not_found),
            ErrorClass::NotFound => Some(self.not_found),
            ErrorClass::Rejected => Some(self.rejected),
        }
    }
}

impl StepError {
    pub fn failed(reason: Reason, message: impl Into<String>) -> Self {
        StepError::Failed { reason, message: message.into(), source: None }
    }

    pub fn abort(reason: Reason, message: impl Into<String>) -> Self {
        StepError::Abort { reason, message: message.into(), source: None }
    }

    pub fn retry(message: impl Into<String>) -> Self {
        StepError::Retry { message: message.into(), source: None }
    }

    /// An AWS error met while working on `subject` (usually "instance i-..."), ended as `policy` says. The
    /// message names the subject and the AWS operation, code and request ID; the error stays attached.
    pub fn aws(error: AwsError, subject: &str, policy: OnError) -> Self {
        let message = format!("{subject}: {error}");
        match policy.outcome(&error) {
            None => StepError::Retry { message, source: Some(error) },
            Some(Outcome::Fail(reason)) => StepError::Failed { reason, message, source: Some(error) },
            Some(Outcome::Abort(reason)) => StepError::Abort { reason, message, source: Some(error) },
        }
    }

    /// An AWS error in a step's call on the instance: `OnError::step(reason)`.
    pub fn on_instance(error: AwsError, instance_id: &str, reason: Reason) -> Self {
        Self::aws(error, &format!("instance {instance_id}"), OnError::step(reason))
    }

    /// The same error, its message extended (what had been done before it, say).
    pub fn note(self, note: impl FnOnce(String) -> String) -> Self {
        match self {
            StepError::Retry { message, source } => StepError::Retry { message: note(message), source },
            StepError::Failed { reason, message, source } => StepError::Failed { reason, message: note(message), source },
            StepError::Abort { reason, message, source } => StepError::Abort { reason, message: note(message), source },
        }
    }
}

impl From<kube::Error> for StepError {
    fn from(e: kube::Error) -> Self {
        StepError::retry(format!("Kubernetes API: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, http: u16) -> AwsError {
        AwsError { operation: "ec2:CreateSnapshots", code: code.into(), message: "m".into(), request_id: Some("r-1".into()), http_status: Some(http) }
    }

    fn kind(e: &StepError) -> (&'static str, Option<Reason>) {
        match e {
            StepError::Retry { .. } => ("retry", None),
            StepError::Failed { reason, .. } => ("failed", Some(*reason)),
            StepError::Abort { reason, .. } => ("abort", Some(*reason)),
        }
    }

    #[test]
    fn each_error_class_has_its_step_outcome() {
        let step = |code, http| kind(&StepError::on_instance(error(code, http), "i-1", Reason::SnapshotFailed));
        assert_eq!(step("RequestLimitExceeded", 503), ("retry", None), "throttling");
        assert_eq!(step("InternalError", 500), ("retry", None), "5xx");
        assert_eq!(step("Transport", 0), ("retry", None), "connection");
        assert_eq!(step("ExpiredToken", 400), ("retry", None), "credentials refreshed under a request");
        assert_eq!(step("RequestTimeTooSkewed", 403), ("retry", None), "clock skew");
        assert_eq!(step("UnauthorizedOperation", 403), ("abort", Some(Reason::AccessDenied)));
        assert_eq!(step("InvalidInstanceID.NotFound", 400), ("abort", Some(Reason::InstanceNotFound)));
        assert_eq!(step("InvalidVolume.NotFound", 400), ("failed", Some(Reason::SnapshotFailed)));
        assert_eq!(step("InvalidParameterValue", 400), ("failed", Some(Reason::SnapshotFailed)));
    }

    #[test]
    fn an_action_fails_alone_and_never_with_a_raw_aws_code() {
        let action = |code, http| kind(&StepError::aws(error(code, http), "instance i-1", OnError::ACTION));
        assert_eq!(action("AccessDenied", 403), ("failed", Some(Reason::AccessDenied)));
        assert_eq!(action("OperationNotPermitted", 400), ("failed", Some(Reason::AwsRequestRejected)));
        assert_eq!(action("SlowDown", 503), ("retry", None));
        let lock = kind(&StepError::aws(error("AccessDenied", 403), "s3://b/k", OnError::only(Reason::ObjectLockFailed)));
        assert_eq!(lock, ("failed", Some(Reason::ObjectLockFailed)), "a refused lock costs only the lock");
    }

    #[test]
    fn the_message_names_the_subject_and_the_aws_error_which_stays_attached() {
        let e = StepError::on_instance(error("InvalidParameterValue", 400), "i-0abc", Reason::SnapshotFailed);
        assert_eq!(e.to_string(), "SnapshotFailed: instance i-0abc: ec2:CreateSnapshots: InvalidParameterValue: m (request ID r-1)");
        let source = std::error::Error::source(&e).expect("the AWS error is the source");
        assert!(source.to_string().starts_with("ec2:CreateSnapshots"));
    }
}
