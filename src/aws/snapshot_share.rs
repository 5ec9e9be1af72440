//! Sharing a snapshot with the forensic account for as long as it takes to copy it (createVolumePermission),
//! in the instance's account. Both calls are idempotent: EC2 accepts adding a permission that is there and
//! removing one that is not.

use std::future::Future;

use aws_sdk_ec2::types::{CreateVolumePermission, CreateVolumePermissionModifications};

use super::AwsError;

pub trait SnapshotShareApi: Send + Sync {
    fn share(&self, snapshot_id: &str, account_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn unshare(&self, snapshot_id: &str, account_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
}

impl super::ec2::SdkEc2 {
    async fn modify_permission(&self, snapshot_id: &str, account_id: &str, add: bool) -> Result<(), AwsError> {
        let permission = vec![CreateVolumePermission::builder().user_id(account_id).build()];
        let change = if add {
            CreateVolumePermissionModifications::builder().set_add(Some(permission))
        } else {
            CreateVolumePermissionModifications::builder().set_remove(Some(permission))
        };
        self.0
            .modify_snapshot_attribute()
            .snapshot_id(snapshot_id)
            .create_volume_permission(change.build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("ec2:ModifySnapshotAttribute", e))
    }
}

impl SnapshotShareApi for super::ec2::SdkEc2 {
    async fn share(&self, snapshot_id: &str, account_id: &str) -> Result<(), AwsError> {
        self.modify_permission(snapshot_id, account_id, true).await
    }

    async fn unshare(&self, snapshot_id: &str, account_id: &str) -> Result<(), AwsError> {
        self.modify_permission(snapshot_id, account_id, false).await
    }
}
