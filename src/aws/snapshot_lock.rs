//! EBS Snapshot Lock: makes a snapshot undeletable for a period (governance or compliance mode).

use std::future::Future;

use aws_sdk_ec2::types::LockMode;

use super::{AwsError, ec2::SdkEc2};
use crate::custody::SnapshotLockRequest;

pub trait SnapshotLockApi: Send + Sync {
    /// Locks one snapshot; returns the lock state EC2 reports (compliance-cooloff, governance, compliance).
    fn lock_snapshot(&self, request: &SnapshotLockRequest) -> impl Future<Output = Result<String, AwsError>> + Send;
}

/// The SDK call for a lock request, built apart from sending it so that its construction is tested even where
/// the emulator lacks the API.
pub fn lock_snapshot_call(client: &aws_sdk_ec2::Client, request: &SnapshotLockRequest) -> aws_sdk_ec2::operation::lock_snapshot::builders::LockSnapshotFluentBuilder {
    client
        .lock_snapshot()
        .snapshot_id(&request.snapshot_id)
        .lock_mode(LockMode::from(request.mode.as_str()))
        .lock_duration(request.duration_days)
        .set_cool_off_period(request.cool_off_hours)
}

impl SnapshotLockApi for SdkEc2 {
    async fn lock_snapshot(&self, request: &SnapshotLockRequest) -> Result<String, AwsError> {
        let output = lock_snapshot_call(&self.0, request).send().await.map_err(|e| AwsError::from_sdk("ec2:LockSnapshot", e))?;
        Ok(output.lock_state().map(|s| s.as_str().to_string()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custody::{SnapshotLockMode, snapshot_lock_request};

    fn client() -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("eu-west-1"))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    #[test]
    fn compliance_lock_call_names_snapshot_mode_duration_and_cool_off() {
        let request = snapshot_lock_request("snap-0123", Some(SnapshotLockMode::Compliance), 3650, 24).unwrap();
        let call = lock_snapshot_call(&client(), &request);
        let input = call.as_input();
        assert_eq!(input.get_snapshot_id().as_deref(), Some("snap-0123"));
        assert_eq!(input.get_lock_mode(), &Some(LockMode::Compliance));
        assert_eq!(input.get_lock_duration(), &Some(3650));
        assert_eq!(input.get_cool_off_period(), &Some(24));
        assert_eq!(input.get_expiration_date(), &None);
    }

    #[test]
    fn governance_lock_call_has_no_cool_off() {
        let request = snapshot_lock_request("snap-0123", Some(SnapshotLockMode::Governance), 30, 24).unwrap();
        let input = lock_snapshot_call(&client(), &request).as_input().clone();
        assert_eq!(input.get_lock_mode(), &Some(LockMode::Governance));
        assert_eq!(input.get_cool_off_period(), &None);
    }
}
