//! Settings for reaching other accounts and regions. The controller runs in a security account; captures
//! may name an instance in a workload account (spec.target.accountId), reached through a role assumed there,
//! while the evidence bucket, presign role and signing key stay in the controller's own account and region.

use std::{collections::BTreeMap, str::FromStr};

/// The placeholder the role ARN template replaces with the target account's ID.
pub const ACCOUNT_PLACEHOLDER: &str = "{accountId}";

#[derive(clap::Args, Debug, Clone)]
pub struct AccountsConfig {
    /// Region of the evidence bucket, of the STS endpoint the presign role is assumed at, and of the KMS
    /// signing key when its ID is not an ARN (an ARN names its own region). Presigned URLs are signed for this
    /// region, whatever the instance's. Unset: the controller's own region (AWS_REGION), else --default-region.
    #[arg(long, env = "FC_EVIDENCE_REGION")]
    pub evidence_region: Option<String>,

    /// Role the controller assumes in a workload account for captures whose spec.target.accountId names an
    /// account other than its own; {accountId} is replaced by that account's ID.
    #[arg(long, env = "FC_TARGET_ROLE_ARN_TEMPLATE", default_value = "arn:aws:iam::{accountId}:role/ForensicCaptureTarget")]
    pub target_role_arn_template: String,

    /// The role of one account, as ACCOUNT=ROLE_ARN, used instead of the template; repeatable or
    /// comma-separated.
    #[arg(long = "target-role", env = "FC_TARGET_ROLES", value_delimiter = ',')]
    pub target_roles: Vec<TargetRole>,

    /// External ID given when assuming a target-account role; the role's trust policy should require it.
    #[arg(long, env = "FC_TARGET_ROLE_EXTERNAL_ID")]
    pub target_role_external_id: Option<String>,

    /// Lifetime of a target-account session, in seconds (900 to 3600; role chaining and most roles allow no
    /// more than an hour). A session is replaced when a quarter of it is left.
    #[arg(long, env = "FC_TARGET_SESSION_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u32).range(900..=3600))]
    pub target_session_seconds: u32,

    /// Forensic account that captures with spec.disk.forensicCopy hand their snapshots to, when the spec
    /// names none.
    #[arg(long, env = "FC_FORENSIC_ACCOUNT_ID", value_parser = account_id)]
    pub forensic_account_id: Option<String>,

    /// Region the forensic copies are made in, when the spec names none. Unset: the instance's region.
    #[arg(long, env = "FC_FORENSIC_REGION")]
    pub forensic_region: Option<String>,

    /// KMS key the forensic copies are encrypted with (an ARN, or an ID or alias in the forensic account and
    /// region), when the spec names none.
    #[arg(long, env = "FC_FORENSIC_KMS_KEY_ID")]
    pub forensic_kms_key_id: Option<String>,

    /// Customer managed KMS key (ARN) that snapshots under another key (such as the AWS managed key for EBS,
    /// which cannot be shared) are re-encrypted to in the instance's account before they are shared with the
    /// forensic account. Unset: the forensic key, when it is given as an ARN.
    #[arg(long, env = "FC_FORENSIC_SHARE_KMS_KEY_ID")]
    pub forensic_share_kms_key_id: Option<String>,

    /// Role the controller assumes in the forensic account to copy snapshots there (and to lock the copies);
    /// {accountId} is replaced by the forensic account's ID. The external ID is --target-role-external-id's.
    #[arg(long, env = "FC_FORENSIC_ROLE_ARN_TEMPLATE", default_value = "arn:aws:iam::{accountId}:role/ForensicCaptureCopy")]
    pub forensic_role_arn_template: String,
}

fn account_id(value: &str) -> Result<String, String> {
    if is_account_id(value) { Ok(value.to_string()) } else { Err(format!("{value:?} is not a 12-digit AWS account ID")) }
}

/// Where one capture's snapshots are copied to, with every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForensicDestination {
    pub account_id: String,
    pub region: String,
    pub kms_key_id: String,
    /// The key snapshots under any other key are re-encrypted to before sharing; None: none is known, so
    /// such a snapshot cannot be handed over.
    pub share_kms_key_id: Option<String>,
    pub role_arn: String,
}

fn is_key_arn(key: &str) -> bool {
    key.starts_with("arn:") && key.contains(":key/")
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            evidence_region: None,
            target_role_arn_template: format!("arn:aws:iam::{ACCOUNT_PLACEHOLDER}:role/ForensicCaptureTarget"),
            target_roles: Vec::new(),
            target_role_external_id: None,
            target_session_seconds: 3600,
            forensic_account_id: None,
            forensic_region: None,
            forensic_kms_key_id: None,
            forensic_share_kms_key_id: None,
            forensic_role_arn_template: format!("arn:aws:iam::{ACCOUNT_PLACEHOLDER}:role/ForensicCaptureCopy"),
        }
    }
}

impl AccountsConfig {
    /// The role to assume in `account`: its own setting, else the template.
    pub fn role_arn(&self, account: &str) -> String {
        let overrides: BTreeMap<&str, &str> = self.target_roles.iter().map(|r| (r.account.as_str(), r.role_arn.as_str())).collect();
        match overrides.get(account) {
            Some(arn) => arn.to_string(),
            None => self.target_role_arn_template.replace(ACCOUNT_PLACEHOLDER, account),
        }
    }
}

impl AccountsConfig {
    /// The forensic copies' destination: the spec's fields, else the controller's; the region defaults to the
    /// instance's. Err names what is missing.
    pub fn forensic_destination(&self, spec: &crate::api::ForensicCopySpec, instance_region: &str) -> Result<ForensicDestination, String> {
        let account_id = spec.account_id.clone().or_else(|| self.forensic_account_id.clone());
        let kms_key_id = spec.kms_key_id.clone().or_else(|| self.forensic_kms_key_id.clone());
        let (account_id, kms_key_id) = match (account_id, kms_key_id) {
            (Some(account), Some(key)) => (account, key),
            (None, _) => return Err("no forensic account: set spec.disk.forensicCopy.accountId or the controller's --forensic-account-id".into()),
            (_, None) => return Err("no KMS key for the forensic copies: set spec.disk.forensicCopy.kmsKeyId or the controller's --forensic-kms-key-id".into()),
        };
        let share_kms_key_id = spec
            .share_kms_key_id
            .clone()
            .or_else(|| self.forensic_share_kms_key_id.clone())
            .or_else(|| is_key_arn(&kms_key_id).then(|| kms_key_id.clone()));
        Ok(ForensicDestination {
            region: spec.region.clone().or_else(|| self.forensic_region.clone()).unwrap_or_else(|| instance_region.to_string()),
            role_arn: self.forensic_role_arn_template.replace(ACCOUNT_PLACEHOLDER, &account_id),
            account_id,
            kms_key_id,
            share_kms_key_id,
        })
    }
}

/// `ACCOUNT=ROLE_ARN`: the role must be in that account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRole {
    pub account: String,
    pub role_arn: String,
}

pub fn is_account_id(value: &str) -> bool {
    value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit())
}

impl FromStr for TargetRole {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let (account, role_arn) = value.split_once('=').ok_or_else(|| format!("{value:?} is not ACCOUNT=ROLE_ARN"))?;
        let (account, role_arn) = (account.trim(), role_arn.trim());
        if !is_account_id(account) {
            return Err(format!("{account:?} is not a 12-digit AWS account ID"));
        }
        // arn:<partition>:iam::<account>:role/<name>
        let fields: Vec<&str> = role_arn.splitn(6, ':').collect();
        if fields.len() != 6 || fields[0] != "arn" || fields[2] != "iam" || !fields[5].starts_with("role/") {
            return Err(format!("{role_arn:?} is not an IAM role ARN (arn:aws:iam::{account}:role/NAME)"));
        }
        if fields[4] != account {
            return Err(format!("role {role_arn} is in account {}, not {account}", fields[4]));
        }
        Ok(TargetRole { account: account.into(), role_arn: role_arn.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_names_the_account_unless_the_account_has_its_own_role() {
        let mut config = AccountsConfig::default();
        assert_eq!(config.role_arn("111111111111"), "arn:aws:iam::111111111111:role/ForensicCaptureTarget");
        config.target_roles.push("222222222222=arn:aws:iam::222222222222:role/IR".parse().unwrap());
        assert_eq!(config.role_arn("222222222222"), "arn:aws:iam::222222222222:role/IR");
        assert_eq!(config.role_arn("111111111111"), "arn:aws:iam::111111111111:role/ForensicCaptureTarget");
    }

    #[test]
    fn the_forensic_destination_takes_the_spec_then_the_controller_then_the_instance_region() {
        use crate::api::ForensicCopySpec;
        let mut config = AccountsConfig::default();
        let empty = ForensicCopySpec::default();
        assert!(config.forensic_destination(&empty, "eu-west-1").unwrap_err().contains("--forensic-account-id"));
        config.forensic_account_id = Some("666677778888".into());
        assert!(config.forensic_destination(&empty, "eu-west-1").unwrap_err().contains("--forensic-kms-key-id"));
        config.forensic_kms_key_id = Some("alias/evidence".into());
        let destination = config.forensic_destination(&empty, "eu-west-1").unwrap();
        assert_eq!(destination.region, "eu-west-1", "the instance's region by default");
        assert_eq!(destination.role_arn, "arn:aws:iam::666677778888:role/ForensicCaptureCopy");
        assert_eq!(destination.share_kms_key_id, None, "an alias is the forensic account's only: nothing to share with");
        let key = "arn:aws:kms:eu-central-1:666677778888:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let spec = ForensicCopySpec { account_id: Some("999900001111".into()), region: Some("eu-central-1".into()), kms_key_id: Some(key.into()), share_kms_key_id: None };
        let destination = config.forensic_destination(&spec, "eu-west-1").unwrap();
        assert_eq!((destination.account_id.as_str(), destination.region.as_str()), ("999900001111", "eu-central-1"));
        assert_eq!(destination.share_kms_key_id.as_deref(), Some(key), "the forensic key, given as an ARN, is the share key");
        config.forensic_share_kms_key_id = Some("arn:aws:kms:eu-west-1:111122223333:key/share".into());
        assert_eq!(config.forensic_destination(&spec, "eu-west-1").unwrap().share_kms_key_id.as_deref(), Some("arn:aws:kms:eu-west-1:111122223333:key/share"));
    }

    #[test]
    fn a_per_account_role_must_be_a_role_of_that_account() {
        assert!("2222=arn:aws:iam::2222:role/IR".parse::<TargetRole>().unwrap_err().contains("12-digit"));
        assert!("222222222222=arn:aws:iam::333333333333:role/IR".parse::<TargetRole>().unwrap_err().contains("in account 333333333333"));
        assert!("222222222222=arn:aws:s3:::bucket".parse::<TargetRole>().unwrap_err().contains("not an IAM role ARN"));
        assert!("222222222222".parse::<TargetRole>().unwrap_err().contains("ACCOUNT=ROLE_ARN"));
        assert_eq!(
            "222222222222=arn:aws-us-gov:iam::222222222222:role/path/IR".parse::<TargetRole>().unwrap().role_arn,
            "arn:aws-us-gov:iam::222222222222:role/path/IR"
        );
    }
}
