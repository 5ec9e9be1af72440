//! The CRD: generated from the Rust types, committed, and enforced by the real API server at apply time.

mod support;

use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

#[test]
fn committed_crd_matches_the_generated_one() {
    let committed = std::fs::read_to_string(support::repo_root().join("crds/forensic-capture.dev.yaml")).unwrap();
    let generated = forensic_capture::crd::yaml();
    assert!(committed == generated, "crds/ is stale: run `cargo run -- crd > crds/forensic-capture.dev.yaml`");
}

async fn setup() -> (kube::Api<forensic_capture::api::ForensicCapture>, String) {
    let client = support::stack().kube().await;
    support::fixtures::install_crd(&client).await;
    let ns = support::namespace(&client, "crd").await;
    (kube::Api::namespaced(client, &ns), ns)
}

fn object(name: &str, spec: serde_json::Value) -> forensic_capture::api::ForensicCapture {
    serde_json::from_value(json!({
        "apiVersion": "forensic-capture.dev/v1alpha1",
        "kind": "ForensicCapture",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// Sends the spec as raw JSON (it may not even deserialize into our types) and expects a 422.
async fn rejected(api: &kube::Api<forensic_capture::api::ForensicCapture>, name: &str, spec: serde_json::Value) -> String {
    let raw: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        support::stack().kube().await,
        api.namespace().unwrap(),
        &kube::discovery::ApiResource::erase::<forensic_capture::api::ForensicCapture>(&()),
    );
    let object: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "forensic-capture.dev/v1alpha1",
        "kind": "ForensicCapture",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    match raw.create(&PostParams::default(), &object).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        other => panic!("{name} should be rejected at apply time, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_specs_are_rejected_with_a_specific_message() {
    let (api, _) = setup().await;
    let msg = rejected(&api, "bad-id", json!({"caseId": "C", "target": {"instanceId": "i-xyz"}})).await;
    assert!(msg.contains("spec.target.instanceId"), "{msg}");
    let msg = rejected(&api, "both", json!({"caseId": "C", "target": {"instanceId": "i-0123456789abcdef0", "nodeName": "n"}})).await;
    assert!(msg.contains("exactly one of target.instanceId, target.nodeName and target.podRef"), "{msg}");
    let msg = rejected(&api, "node-and-pod", json!({"caseId": "C", "target": {"nodeName": "n", "podRef": {"namespace": "a", "name": "p"}}})).await;
    assert!(msg.contains("exactly one of"), "{msg}");
    let msg = rejected(&api, "nameless-pod", json!({"caseId": "C", "target": {"podRef": {"namespace": "a", "name": ""}}})).await;
    assert!(msg.contains("spec.target.podRef.name"), "{msg}");
    let msg = rejected(&api, "neither", json!({"caseId": "C", "target": {}})).await;
    assert!(msg.contains("exactly one"), "{msg}");
    let msg = rejected(&api, "case", json!({"caseId": "../etc", "target": {"instanceId": "i-0123456789abcdef0"}})).await;
    assert!(msg.contains("spec.caseId"), "{msg}");
    let msg = rejected(&api, "nocase", json!({"target": {"instanceId": "i-0123456789abcdef0"}})).await;
    assert!(msg.contains("caseId"), "{msg}");
    for cidr in ["203.0.113.7", "300.1.1.1/32", "10.0.0.1/8"] {
        let msg = rejected(
            &api,
            "cidr",
            json!({"caseId": "C", "target": {"instanceId": "i-0123456789abcdef0"}, "isolation": {"allowIngressCidrs": [cidr]}}),
        )
        .await;
        assert!(msg.contains("CIDR"), "{cidr}: {msg}");
    }
    let target = json!({"instanceId": "i-0123456789abcdef0"});
    let msg = rejected(&api, "copy-no-disk", json!({"caseId": "C", "target": target, "disk": {"enabled": false, "forensicCopy": {}}})).await;
    assert!(msg.contains("forensicCopy copies the capture's snapshots: it needs disk.enabled"), "{msg}");
    let msg = rejected(&api, "copy-account", json!({"caseId": "C", "target": target, "disk": {"forensicCopy": {"accountId": "6666"}}})).await;
    assert!(msg.contains("spec.disk.forensicCopy.accountId"), "{msg}");
}

/// An ingress CIDR of prefix length 0 admits every address: isolation with it is no isolation, so the API server
/// refuses it at apply time and says why; responder networks of either family are accepted.
#[tokio::test]
async fn an_all_addresses_ingress_cidr_is_refused_and_responder_networks_are_accepted() {
    let (api, _) = setup().await;
    let spec = |cidr: &str| json!({"caseId": "C", "target": {"instanceId": "i-0123456789abcdef0"}, "isolation": {"allowIngressCidrs": ["203.0.113.7/32", cidr]}});
    for (name, cidr) in [("all-v4", "0.0.0.0/0"), ("all-v6", "::/0")] {
        let msg = rejected(&api, name, spec(cidr)).await;
        assert!(msg.contains("spec.isolation.allowIngressCidrs"), "{cidr}: {msg}");
        assert!(msg.contains("admits every address") && msg.contains("isolation that admits everyone is no isolation"), "{cidr}: {msg}");
    }
    for (name, cidr) in [("responder-v4", "198.51.100.0/24"), ("responder-v6", "2001:db8:1234::/48")] {
        let created = api.create(&PostParams::default(), &object(name, spec(cidr))).await.unwrap_or_else(|e| panic!("{cidr} accepted: {e}"));
        assert_eq!(created.spec.steps.isolation.allow_ingress_cidrs, vec!["203.0.113.7/32".to_string(), cidr.to_string()]);
    }
}

#[tokio::test]
async fn a_valid_spec_is_accepted_with_defaults_and_is_then_immutable() {
    let (api, _) = setup().await;
    let created = api
        .create(
            &PostParams::default(),
            &object("ok", json!({"caseId": "INC-4711", "target": {"instanceId": "i-0123456789abcdef0"}, "isolation": {"allowIngressCidrs": ["203.0.113.7/32", "2001:db8::/32"]}})),
        )
        .await
        .expect("valid spec accepted");
    assert!(created.spec.steps.memory.enabled && created.spec.steps.volatile.enabled && created.spec.steps.disk.enabled);
    let change = api
        .patch("ok", &PatchParams::default(), &Patch::Merge(json!({"spec": {"caseId": "OTHER"}})))
        .await;
    match change {
        Err(kube::Error::Api(status)) => assert!(status.message.contains("spec is immutable"), "{}", status.message),
        other => panic!("spec change should be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn printer_columns_are_served() {
    let client = support::stack().kube().await;
    support::fixtures::install_crd(&client).await;
    let crds: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = kube::Api::all(client);
    let crd = crds.get("forensiccaptures.forensic-capture.dev").await.unwrap();
    let columns: Vec<String> = crd.spec.versions[0].additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.clone()).collect();
    assert_eq!(columns, vec!["Phase", "Instance", "Case", "Ready", "Reason", "Age"]);
    assert_eq!(crd.spec.names.short_names, Some(vec!["fc".to_string()]));
}

/// Creates a CapturePolicy or CaptureApproval from raw JSON; the API server's answer (422 message) on refusal.
async fn create_raw(namespace: &str, kind: &str, name: &str, spec: serde_json::Value) -> Result<(), String> {
    let client = support::stack().kube().await;
    let resource = match kind {
        "CapturePolicy" => kube::discovery::ApiResource::erase::<forensic_capture::api::CapturePolicy>(&()),
        _ => kube::discovery::ApiResource::erase::<forensic_capture::api::CaptureApproval>(&()),
    };
    let raw: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(client, namespace, &resource);
    let object: kube::api::DynamicObject =
        serde_json::from_value(json!({"apiVersion": "forensic-capture.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})).unwrap();
    match raw.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 422 => Err(status.message),
        Err(other) => panic!("{kind} {name}: {other:?}"),
    }
}

#[tokio::test]
async fn capture_policies_and_approvals_are_checked_at_apply_time() {
    let (_, ns) = setup().await;
    let policy = |sources: serde_json::Value, extra: serde_json::Value| {
        let mut spec = json!({"mode": "Automatic", "sources": sources, "template": {"isolation": {"enabled": true}}});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        spec
    };
    create_raw(&ns, "CapturePolicy", "ok", policy(json!({"guardDuty": {"findingTypes": ["Backdoor:EC2/*"]}}), json!({}))).await.unwrap();
    let msg = create_raw(&ns, "CapturePolicy", "no-source", policy(json!({}), json!({}))).await.unwrap_err();
    assert!(msg.contains("set at least one source"), "{msg}");
    let msg = create_raw(&ns, "CapturePolicy", "severity", policy(json!({"guardDuty": {"minSeverity": 11}}), json!({}))).await.unwrap_err();
    assert!(msg.contains("spec.sources.guardDuty.minSeverity"), "{msg}");
    let msg = create_raw(&ns, "CapturePolicy", "mode", policy(json!({"guardDuty": {}}), json!({"mode": "Sometimes"}))).await.unwrap_err();
    assert!(msg.contains("spec.mode"), "{msg}");
    let msg = create_raw(&ns, "CapturePolicy", "rate", policy(json!({"guardDuty": {}}), json!({"maxCapturesPerHour": 0}))).await.unwrap_err();
    assert!(msg.contains("spec.maxCapturesPerHour"), "{msg}");
    let msg = create_raw(&ns, "CapturePolicy", "prefix", policy(json!({"guardDuty": {}}), json!({"template": {"caseIdPrefix": "no spaces"}}))).await.unwrap_err();
    assert!(msg.contains("spec.template.caseIdPrefix"), "{msg}");
    let msg = create_raw(&ns, "CapturePolicy", "label", policy(json!({"securityHubFindings": {"minSeverityLabel": "SEVERE"}}), json!({}))).await.unwrap_err();
    assert!(msg.contains("minSeverityLabel"), "{msg}");

    create_raw(&ns, "CaptureApproval", "go", json!({"captureName": "c", "reason": "confirmed"})).await.unwrap();
    let msg = create_raw(&ns, "CaptureApproval", "no-reason", json!({"captureName": "c", "reason": ""})).await.unwrap_err();
    assert!(msg.contains("spec.reason"), "{msg}");
    let approvals: kube::Api<forensic_capture::api::CaptureApproval> = kube::Api::namespaced(support::stack().kube().await, &ns);
    let changed = approvals.patch("go", &PatchParams::default(), &Patch::Merge(json!({"spec": {"captureName": "other"}}))).await.unwrap_err();
    assert!(changed.to_string().contains("an approval is a record"), "{changed}");
}
