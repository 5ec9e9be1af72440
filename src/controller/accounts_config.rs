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
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            evidence_region: None,
            target_role_arn_template: format!("arn:aws:iam::{ACCOUNT_PLACEHOLDER}:role/ForensicCaptureTarget"),
            target_roles: Vec::new(),
            target_role_external_id: None,
            target_session_seconds: 3600,
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
