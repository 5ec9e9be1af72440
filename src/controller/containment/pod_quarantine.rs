//! Pod targets: the pod is labelled with the capture's UID and a NetworkPolicy selecting that label denies all
//! egress and all ingress but from allowIngressCidrs. The pod keeps running (it is evidence, and deleting it
//! would destroy its memory and writable layer); release removes the policy and puts the label back as it was.
//!
//! NetworkPolicies add up: another policy that selects the pod still admits what it allows. Those are named in
//! the record and the message, so the responder knows the quarantine is not the only rule in force.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::{
    api::{
        core::v1::Pod,
        networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;

use super::{Action, Applied, Apply, Restore, Scope};
use crate::{
    api::{PodQuarantineRecord, Reason},
    controller::failure::StepError,
};

pub use crate::planner::QUARANTINE_LABEL;
const FIELD_MANAGER: &str = "forensic-capture";

pub struct PodQuarantine;

/// Deny all egress; admit ingress only from these CIDRs (none: deny all ingress).
pub fn quarantine_policy(name: &str, namespace: &str, capture_uid: &str, labels: BTreeMap<String, String>, allow_ingress_cidrs: &[String]) -> NetworkPolicy {
    let ingress = (!allow_ingress_cidrs.is_empty()).then(|| {
        vec![NetworkPolicyIngressRule {
            from: Some(allow_ingress_cidrs.iter().map(|cidr| NetworkPolicyPeer { ip_block: Some(IPBlock { cidr: cidr.clone(), except: None }), ..Default::default() }).collect()),
            ports: None,
        }]
    });
    NetworkPolicy {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(namespace.into()), labels: Some(labels), ..Default::default() },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some([(QUARANTINE_LABEL.to_string(), capture_uid.to_string())].into()), match_expressions: None }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress.unwrap_or_default()),
            egress: Some(vec![]),
        }),
    }
}

/// Whether a NetworkPolicy's podSelector selects a pod with these labels (an empty selector selects every pod
/// of the namespace), by the rules of Kubernetes label selectors.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let matches_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let matches_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    matches_labels && matches_expressions
}

fn pod_error(namespace: &str, name: &str, error: kube::Error) -> StepError {
    super::kube_error(&format!("pod {namespace}/{name}"), Reason::PodNotFound, error)
}

impl Action for PodQuarantine {
    fn name(&self) -> &'static str {
        "PodQuarantine"
    }

    fn scope(&self) -> Scope {
        Scope::Pod
    }

    fn apply<'x>(&'x self, cx: &'x mut Apply<'_, '_>) -> BoxFuture<'x, Result<Applied, StepError>> {
        Box::pin(async move {
            let Some(target) = cx.sc.target.pod.clone() else {
                return Ok(Applied::NotNeeded("the target is not a pod".into()));
            };
            let (namespace, name) = (target.namespace.as_str(), target.name.as_str());
            let client = cx.sc.ctx.client.clone();
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let pod = pods.get_opt(name).await.map_err(|e| pod_error(namespace, name, e))?;
            let Some(pod) = pod.filter(|p| p.metadata.uid.as_deref() == Some(target.uid.as_str())) else {
                return Err(StepError::failed(
                    Reason::PodNotFound,
                    format!("pod {namespace}/{name} (uid {}) is gone before containment: there is nothing left to quarantine", target.uid),
                ));
            };
            let uid = cx.sc.uid.clone();
            let policy = crate::planner::quarantine_policy_name(&uid);
            let policies: Api<NetworkPolicy> = Api::namespaced(client, namespace);
            if cx.record().pod_quarantine.is_none() {
                let labels = pod.labels().clone();
                let mut others: Vec<String> = policies
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| pod_error(namespace, name, e))?
                    .into_iter()
                    .filter(|p| p.name_any() != policy && p.spec.as_ref().is_some_and(|s| selects(s.pod_selector.as_ref().unwrap_or(&LabelSelector::default()), &labels)))
                    .map(|p| p.name_any())
                    .collect();
                others.sort();
                cx.record().pod_quarantine = Some(PodQuarantineRecord {
                    namespace: namespace.into(),
                    name: name.into(),
                    uid: target.uid.clone(),
                    label: format!("{QUARANTINE_LABEL}={uid}"),
                    label_before: labels.get(QUARANTINE_LABEL).cloned(),
                    network_policy: policy.clone(),
                    other_policies: others,
                });
                cx.save().await?;
            }
            let cidrs = cx.sc.capture.spec.steps.isolation.allow_ingress_cidrs.clone();
            let policy_labels: BTreeMap<String, String> = [
                ("app.kubernetes.io/managed-by".to_string(), "forensic-capture".to_string()),
                (crate::aws::ec2::tags::CAPTURE_UID.to_string(), uid.clone()),
            ]
            .into();
            let object = quarantine_policy(&policy, namespace, &uid, policy_labels, &cidrs);
            // Server-side apply: the same policy again (after a restart) is no change.
            policies.patch(&policy, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object)).await.map_err(|e| pod_error(namespace, name, e))?;
            // The UID in the patch is a precondition: a new pod that took the name is never labelled.
            let label = json!({"metadata": {"uid": target.uid, "labels": {QUARANTINE_LABEL: uid}}});
            pods.patch(name, &PatchParams::default(), &Patch::Merge(&label)).await.map_err(|e| pod_error(namespace, name, e))?;
            let ingress = if cidrs.is_empty() { "no ingress".to_string() } else { format!("ingress only from {}", cidrs.join(", ")) };
            let mut message = format!("pod {namespace}/{name} labelled {QUARANTINE_LABEL}={uid}; NetworkPolicy {policy} denies all egress and allows {ingress}");
            let others = &cx.record().pod_quarantine.as_ref().expect("recorded above").other_policies;
            if !others.is_empty() {
                message.push_str(&format!("; NetworkPolicies add up, and these also select the pod and still admit what they allow: {}", others.join(", ")));
            }
            Ok(Applied::Changed(message))
        })
    }

    fn restore<'x>(&'x self, cx: &'x Restore<'_>) -> BoxFuture<'x, Result<String, StepError>> {
        Box::pin(async move {
            let Some(record) = &cx.record.pod_quarantine else {
                return Ok("no pod was quarantined".into());
            };
            let (namespace, name) = (record.namespace.as_str(), record.name.as_str());
            let policies: Api<NetworkPolicy> = Api::namespaced(cx.client.clone(), namespace);
            match policies.delete(&record.network_policy, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(pod_error(namespace, name, e)),
            }
            let pods: Api<Pod> = Api::namespaced(cx.client.clone(), namespace);
            let label = json!({"metadata": {"uid": record.uid, "labels": {QUARANTINE_LABEL: record.label_before}}});
            let unlabelled = match pods.patch(name, &PatchParams::default(), &Patch::Merge(&label)).await {
                Ok(_) => match &record.label_before {
                    Some(before) => format!("label {QUARANTINE_LABEL} set back to {before}"),
                    None => format!("label {QUARANTINE_LABEL} removed"),
                },
                // Gone, or another pod of that name now (the UID precondition): nothing of ours is left on it.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => "the pod is gone, so no label to remove".to_string(),
                Err(e) => return Err(pod_error(namespace, name, e)),
            };
            Ok(format!("NetworkPolicy {} deleted; pod {namespace}/{name}: {unlabelled}", record.network_policy))
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement { key: key.into(), operator: operator.into(), values: Some(values.iter().map(|v| v.to_string()).collect()) }
    }

    #[test]
    fn selectors_select_by_the_rules_of_label_selectors() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        assert!(selects(&LabelSelector::default(), &pod), "an empty selector selects every pod");
        let by_label = |pairs: &[(&str, &str)]| LabelSelector { match_labels: Some(labels(pairs)), match_expressions: None };
        assert!(selects(&by_label(&[("app", "web")]), &pod));
        assert!(!selects(&by_label(&[("app", "web"), ("tier", "back")]), &pod));
        let by_expression = |r: LabelSelectorRequirement| LabelSelector { match_labels: None, match_expressions: Some(vec![r]) };
        assert!(selects(&by_expression(requirement("tier", "In", &["front", "mid"])), &pod));
        assert!(!selects(&by_expression(requirement("tier", "NotIn", &["front"])), &pod));
        assert!(selects(&by_expression(requirement("env", "NotIn", &["prod"])), &pod), "NotIn admits a pod without the key");
        assert!(selects(&by_expression(requirement("app", "Exists", &[])), &pod));
        assert!(!selects(&by_expression(requirement("app", "DoesNotExist", &[])), &pod));
        assert!(!selects(&by_expression(requirement("app", "Gt", &["1"])), &pod), "an operator pods cannot use selects nothing");
    }

    #[test]
    fn the_policy_denies_all_egress_and_admits_only_the_responder_networks() {
        let policy = quarantine_policy("p", "web", "uid-1", BTreeMap::new(), &["203.0.113.7/32".into()]);
        let spec = policy.spec.unwrap();
        assert_eq!(spec.pod_selector.unwrap().match_labels.unwrap(), labels(&[(QUARANTINE_LABEL, "uid-1")]));
        assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
        assert_eq!(spec.egress.unwrap(), vec![]);
        let ingress = spec.ingress.unwrap();
        assert_eq!(ingress.len(), 1);
        assert_eq!(ingress[0].from.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr, "203.0.113.7/32");
        assert_eq!(ingress[0].ports, None, "every port, as for the instance's isolation group");
        let closed = quarantine_policy("p", "web", "uid-1", BTreeMap::new(), &[]).spec.unwrap();
        assert_eq!(closed.ingress.unwrap(), vec![], "no CIDRs: no ingress at all");
    }
}
