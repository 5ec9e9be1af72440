//! IAM: find an instance profile's role, deny its sessions issued before containment.

use std::future::Future;

use super::AwsError;

pub trait IamApi: Send + Sync {
    fn instance_profile_role(&self, instance_profile_arn: &str) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    /// An inline policy denying everything to sessions whose token was issued before `before` (RFC 3339).
    fn deny_sessions_before(&self, role_name: &str, policy_name: &str, before: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
}

#[derive(Clone)]
pub struct SdkIam(pub aws_sdk_iam::Client);

/// The revocation policy AWS documents for compromised role credentials.
pub fn revoke_policy(before: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": before}}
        }]
    })
    .to_string()
}

impl IamApi for SdkIam {
    async fn instance_profile_role(&self, instance_profile_arn: &str) -> Result<Option<String>, AwsError> {
        let name = instance_profile_arn.rsplit('/').next().unwrap_or(instance_profile_arn);
        let output = self
            .0
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:GetInstanceProfile", e))?;
        Ok(output.instance_profile().and_then(|p| p.roles().first()).map(|r| r.role_name().to_string()))
    }

    async fn deny_sessions_before(&self, role_name: &str, policy_name: &str, before: &str) -> Result<(), AwsError> {
        self.0
            .put_role_policy()
            .role_name(role_name)
            .policy_name(policy_name)
            .policy_document(revoke_policy(before))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:PutRolePolicy", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn revoke_policy_denies_sessions_issued_before_the_instant() {
        let policy: serde_json::Value = serde_json::from_str(&super::revoke_policy("2026-11-25T22:00:00Z")).unwrap();
        let statement = &policy["Statement"][0];
        assert_eq!(statement["Effect"], "Deny");
        assert_eq!(statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"], "2026-11-25T22:00:00Z");
    }
}
