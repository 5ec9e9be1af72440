//! Whether an identity holds permissions, asked without using them: IAM's policy simulation
//! (`iam:SimulatePrincipalPolicy`) and EC2's dry runs (`DryRun=true`, answered `DryRunOperation` when the call
//! would be authorized and `UnauthorizedOperation` when not, with nothing done either way). Readiness uses
//! both (src/controller/readiness.rs); neither changes anything.

use aws_sdk_ec2::types::{AttributeBooleanValue, InstanceSpecification, ResourceType, Tag};
use aws_sdk_iam::types::PolicyEvaluationDecisionType;

use super::{AwsError, ErrorClass, ec2::SdkEc2, iam::SdkIam};

/// One action's verdict from a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedAction {
    pub action: String,
    /// `allowed`, `explicitDeny` or `implicitDeny`, across the resources simulated.
    pub decision: String,
    /// Each resource the action is not allowed on, with that resource's decision (empty when allowed).
    pub denied: Vec<(String, String)>,
}

impl SdkIam {
    /// Simulates `actions` on `resources` (none: IAM's default, `*`) for the user, group or role
    /// `principal_arn`, with the policies attached to it. Pages through the answer.
    pub async fn simulate(&self, principal_arn: &str, actions: &[String], resources: &[String]) -> Result<Vec<SimulatedAction>, AwsError> {
        let mut results = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let output = self
                .0
                .simulate_principal_policy()
                .policy_source_arn(principal_arn)
                .set_action_names(Some(actions.to_vec()))
                .set_resource_arns((!resources.is_empty()).then(|| resources.to_vec()))
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("iam:SimulatePrincipalPolicy", e))?;
            for result in output.evaluation_results() {
                let decision = result.eval_decision().as_str().to_string();
                let mut denied: Vec<(String, String)> = result
                    .resource_specific_results()
                    .iter()
                    .filter(|r| *r.eval_resource_decision() != PolicyEvaluationDecisionType::Allowed)
                    .map(|r| (r.eval_resource_name().to_string(), r.eval_resource_decision().as_str().to_string()))
                    .collect();
                if denied.is_empty() && *result.eval_decision() != PolicyEvaluationDecisionType::Allowed {
                    denied.push((result.eval_resource_name().unwrap_or("*").to_string(), decision.clone()));
                }
                results.push(SimulatedAction { action: result.eval_action_name().to_string(), decision, denied });
            }
            match output.marker().filter(|_| output.is_truncated()) {
                Some(next) => marker = Some(next.to_string()),
                None => return Ok(results),
            }
        }
    }
}

/// An EC2 call a capture makes, sent with `DryRun=true` against what readiness already knows about an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum DryRunProbe {
    /// The disk step's snapshots of every volume, tagged at creation.
    CreateSnapshots { instance_id: String },
    /// Containment's isolation group, tagged at creation.
    CreateSecurityGroup { vpc_id: String },
    /// Containment's termination protection.
    ModifyInstanceAttribute { instance_id: String },
    /// Containment's instance tags.
    CreateTags { instance_id: String },
    /// Containment's swap of an interface's groups (here to the groups it has).
    ModifyNetworkInterfaceAttribute { network_interface_id: String, group_ids: Vec<String> },
}

impl DryRunProbe {
    /// The IAM action the call needs (as the controller's policy names it).
    pub fn action(&self) -> &'static str {
        match self {
            DryRunProbe::CreateSnapshots { .. } => "ec2:CreateSnapshots",
            DryRunProbe::CreateSecurityGroup { .. } => "ec2:CreateSecurityGroup",
            DryRunProbe::ModifyInstanceAttribute { .. } => "ec2:ModifyInstanceAttribute",
            DryRunProbe::CreateTags { .. } => "ec2:CreateTags",
            DryRunProbe::ModifyNetworkInterfaceAttribute { .. } => "ec2:ModifyNetworkInterfaceAttribute",
        }
    }
}

/// What EC2 answered a dry run.
#[derive(Debug, Clone)]
pub enum DryRunAnswer {
    /// `DryRunOperation`: the call would have been authorized.
    Allowed,
    /// Refused for lack of permission; the error's code (`UnauthorizedOperation`, ...).
    Denied(AwsError),
}

/// The code EC2 answers a dry run that would have succeeded with.
const DRY_RUN_OPERATION: &str = "DryRunOperation";

fn answer(operation: &'static str, result: Result<(), AwsError>) -> Result<DryRunAnswer, AwsError> {
    match result {
        // A dry run that succeeded was not a dry run: something may have changed. Said, never taken for allowed.
        Ok(()) => Err(AwsError::local(operation, "DryRunIgnored", "the request was carried out although DryRun was set")),
        Err(e) if e.code == DRY_RUN_OPERATION => Ok(DryRunAnswer::Allowed),
        Err(e) if e.class() == ErrorClass::AccessDenied => Ok(DryRunAnswer::Denied(e)),
        Err(e) => Err(e),
    }
}

impl SdkEc2 {
    /// Sends `probe` with DryRun set; `tags` are the tags given at creation, as a capture gives its own.
    pub async fn dry_run(&self, probe: &DryRunProbe, tags: &[(String, String)]) -> Result<DryRunAnswer, AwsError> {
        let operation = probe.action();
        let tag_list: Vec<Tag> = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        // Every probe is sent the same way: DryRun set, the answer read only for its error.
        macro_rules! dry_run {
            ($request:expr) => {
                $request.dry_run(true).send().await.map(|_| ()).map_err(|e| AwsError::from_sdk(operation, e))
            };
        }
        let sent = match probe {
            DryRunProbe::CreateSnapshots { instance_id } => dry_run!(self
                .0
                .create_snapshots()
                .instance_specification(InstanceSpecification::builder().instance_id(instance_id).build())
                .description("forensic-capture readiness: dry run")
                .tag_specifications(super::ec2::tag_spec(ResourceType::Snapshot, tags))),
            DryRunProbe::CreateSecurityGroup { vpc_id } => dry_run!(self
                .0
                .create_security_group()
                .vpc_id(vpc_id)
                .group_name("forensic-capture-readiness-dry-run")
                .description("forensic-capture readiness: dry run")
                .tag_specifications(super::ec2::tag_spec(ResourceType::SecurityGroup, tags))),
            DryRunProbe::ModifyInstanceAttribute { instance_id } => dry_run!(self
                .0
                .modify_instance_attribute()
                .instance_id(instance_id)
                .disable_api_termination(AttributeBooleanValue::builder().value(true).build())),
            DryRunProbe::CreateTags { instance_id } => dry_run!(self.0.create_tags().resources(instance_id).set_tags(Some(tag_list))),
            DryRunProbe::ModifyNetworkInterfaceAttribute { network_interface_id, group_ids } => dry_run!(self
                .0
                .modify_network_interface_attribute()
                .network_interface_id(network_interface_id)
                .set_groups(Some(group_ids.clone()))),
        };
        answer(operation, sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, status: u16) -> AwsError {
        AwsError { operation: "ec2:CreateSnapshots", code: code.into(), message: "m".into(), request_id: None, http_status: Some(status) }
    }

    #[test]
    fn dry_run_answers_are_read_as_ec2_documents_them() {
        assert!(matches!(answer("ec2:CreateSnapshots", Err(error("DryRunOperation", 412))), Ok(DryRunAnswer::Allowed)));
        assert!(matches!(answer("ec2:CreateSnapshots", Err(error("UnauthorizedOperation", 403))), Ok(DryRunAnswer::Denied(e)) if e.code == "UnauthorizedOperation"));
        // moto answers a denial with AccessDenied; either is a denial.
        assert!(matches!(answer("ec2:CreateSnapshots", Err(error("AccessDenied", 403))), Ok(DryRunAnswer::Denied(_))));
        assert_eq!(answer("ec2:CreateSnapshots", Err(error("InvalidInstanceID.NotFound", 400))).unwrap_err().code, "InvalidInstanceID.NotFound");
        assert_eq!(answer("ec2:CreateSnapshots", Ok(())).unwrap_err().code, "DryRunIgnored", "a dry run that acted is never allowed");
    }
}
