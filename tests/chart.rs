//! The Helm chart on the proof environment's real API server: lint, server-side validation of everything it
//! renders, the restricted Pod Security Standard, helm install, the ServiceMonitor gated on the monitoring
//! API, and the controller running as the chart's ServiceAccount: it completes captures with exactly the
//! RBAC the chart grants and is refused anything beyond it.

mod support;

use std::time::{Duration, Instant};

use forensic_capture::api::{ContainmentRelease, Phase};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
        core::v1::{Namespace, Node, Pod, Secret},
        events::v1::Event,
        rbac::v1::{ClusterRole, PolicyRule, Role},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery::Scope,
};
use serde_json::{Value, json};
use support::{
    chart::{self, set, set_string},
    controller::ControllerProcess,
    fixtures::{CaptureEnv, PRESIGN_ROLE_ARN, capture_yaml, set_instance_memory},
    stack, unique,
};

/// Held while a test installs the chart or switches the ServiceMonitor API on or off: helm decides what to
/// render from the APIs the server offers when it starts, so the API must not vanish under an install.
static SERVED_APIS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Values that switch on every optional part of the chart.
fn every_feature(watch_namespace: &str) -> Vec<String> {
    [
        set_string("evidence.bucket", "evidence-bucket"),
        set_string("evidence.presignRoleArn", PRESIGN_ROLE_ARN),
        set_string("evidence.signingKeyId", "alias/forensic-capture-manifest"),
        set_string("evidence.objectLock.mode", "COMPLIANCE"),
        set("evidence.objectLock.retentionDays", "365"),
        set("evidence.objectLock.legalHold", "true"),
        set_string("snapshotLock.mode", "compliance"),
        set("snapshotLock.durationDays", "30"),
        set_string("avml.x86_64.uri", "s3://tools-bucket/avml/x86_64"),
        set_string("avml.x86_64.sha256", SHA),
        set_string("avml.arm64.uri", "s3://tools-bucket/avml/arm64"),
        set_string("avml.arm64.sha256", SHA),
        set_string("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn", "arn:aws:iam::123456789012:role/forensic-capture"),
        set("networkPolicy.enabled", "true"),
        set_string("networkPolicy.apiServer.cidrs[0]", "10.0.0.0/16"),
        set_string("controller.watchNamespace", watch_namespace),
        set_string("controller.leaderElection.namespace", watch_namespace),
        set_string("aws.region", "eu-west-1"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[test]
fn helm_lint_passes_with_the_defaults_and_with_every_feature_on() {
    let chart = chart::chart_dir().display().to_string();
    chart::helm(&["lint", "--strict", &chart]).unwrap_or_else(|e| panic!("{e}"));
    let mut args = vec!["lint".to_string(), "--strict".into(), chart];
    args.extend(every_feature("captures"));
    chart::helm(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_charts_crds_are_the_repositorys_and_its_version_is_the_controllers() {
    let ours = std::fs::read_to_string(support::repo_root().join("crds/forensic-capture.dev.yaml")).unwrap();
    let charts = std::fs::read_to_string(chart::chart_dir().join("crds/forensic-capture.dev.yaml")).unwrap();
    assert!(
        ours == charts,
        "charts/forensic-capture/crds/forensic-capture.dev.yaml differs from crds/forensic-capture.dev.yaml: \
         run `cp crds/forensic-capture.dev.yaml charts/forensic-capture/crds/`"
    );
    let chart_yaml: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(chart::chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart_yaml["appVersion"].as_str(), Some(version), "Chart.yaml appVersion");
    assert_eq!(chart_yaml["version"].as_str(), Some(version), "Chart.yaml version");
}

#[test]
fn the_schema_rejects_malformed_values_naming_the_key() {
    let cases: [(&[[String; 2]], &str); 10] = [
        (&[set_string("evidence.buckt", "evidence")], "additional properties 'buckt' not allowed"),
        (&[set_string("avml.x86_64.uri", "s3://tools-bucket/avml")], "/avml/x86_64/sha256"),
        (&[set_string("avml.x86_64.uri", "s3://tools-bucket/avml"), set_string("avml.x86_64.sha256", "abc")], "/avml/x86_64/sha256"),
        (&[set_string("avml.arm64.uri", "https://example.com/avml"), set_string("avml.arm64.sha256", SHA)], "/avml/arm64/uri"),
        (&[set_string("evidence.objectLock.mode", "governance"), set("evidence.objectLock.retentionDays", "7")], "/evidence/objectLock/mode"),
        (&[set_string("evidence.objectLock.mode", "GOVERNANCE"), set("evidence.objectLock.retentionDays", "0")], "/evidence/objectLock/retentionDays"),
        (&[set_string("snapshotLock.mode", "compliance"), set("snapshotLock.coolOffHours", "73")], "/snapshotLock/coolOffHours"),
        (&[set("controller.commandDeliveryTimeoutSeconds", "10")], "/controller/commandDeliveryTimeoutSeconds"),
        // Without leader election a second controller would act on AWS too.
        (&[set("controller.leaderElection.enabled", "false"), set("replicas", "2")], "/replicas"),
        (&[set("controller.leaderElection.enabled", "false"), set_string("strategy.type", "RollingUpdate")], "/strategy/type"),
    ];
    for (values, expected) in cases {
        let args: Vec<String> = values.iter().flatten().cloned().collect();
        let error = chart::render("fc", "forensic-capture", &args).expect_err(&format!("{args:?} must be rejected"));
        assert!(error.contains(expected), "{args:?}: expected the error to name {expected:?}, got: {error}");
    }
}

/// The Kind and name of everything the chart renders, with and without the optional parts.
#[test]
fn the_rendered_resource_list_is_the_documented_one() {
    let defaults = chart::render("fc", "security", &[]).unwrap();
    assert_eq!(
        chart::kinds_and_names(&defaults),
        [
            "ClusterRole/fc-forensic-capture",
            "ClusterRole/fc-forensic-capture-nodes",
            "ClusterRoleBinding/fc-forensic-capture",
            "ClusterRoleBinding/fc-forensic-capture-nodes",
            "Deployment/fc-forensic-capture",
            "PodDisruptionBudget/fc-forensic-capture",
            "Role/fc-forensic-capture-leases",
            "RoleBinding/fc-forensic-capture-leases",
            "Service/fc-forensic-capture-metrics",
            "ServiceAccount/fc-forensic-capture",
        ]
    );
    // Without the monitoring API there is no ServiceMonitor; with it, one; switched off, none.
    let with_api = |extra: &[String]| {
        let mut args = vec!["--api-versions".to_string(), "monitoring.coreos.com/v1/ServiceMonitor".into()];
        args.extend_from_slice(extra);
        chart::render("fc", "security", &args).unwrap()
    };
    assert_eq!(chart::find(&with_api(&[]), "ServiceMonitor").len(), 1);
    assert_eq!(chart::find(&with_api(&set("serviceMonitor.enabled", "false")), "ServiceMonitor").len(), 0);

    // Scoped to one namespace, the capture rules are bound there only; leases live in the release's namespace
    // and the leader election namespace.
    let scoped = chart::render("fc", "security", &every_feature("cases")).unwrap();
    let names = chart::kinds_and_names(&scoped);
    assert!(names.contains(&"NetworkPolicy/fc-forensic-capture".to_string()), "{names:?}");
    assert!(!names.contains(&"ClusterRoleBinding/fc-forensic-capture".to_string()), "{names:?}");
    let bindings: Vec<String> = chart::find(&scoped, "RoleBinding")
        .iter()
        .map(|b| format!("{}/{}", b["metadata"]["namespace"].as_str().unwrap(), b["metadata"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(bindings, ["cases/fc-forensic-capture", "security/fc-forensic-capture-leases", "cases/fc-forensic-capture-leases"]);
}

/// The finding intake's permissions come with its queue: without findings.queueUrl the controller may not read
/// policies or create captures; with it, it may, and the Deployment names the queue.
#[test]
fn the_finding_intake_is_granted_only_with_a_queue() {
    let verbs_on = |rendered: &[Value], resource: &str| -> Vec<String> {
        let role = chart::find(rendered, "ClusterRole").into_iter().find(|r| r["metadata"]["name"] == "fc-forensic-capture").unwrap();
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resources"].as_array().unwrap().iter().any(|x| x == resource))
            .flat_map(|r| r["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()))
            .collect()
    };
    let without = chart::render("fc", "security", &[]).unwrap();
    assert!(!verbs_on(&without, "forensiccaptures").contains(&"create".to_string()));
    assert!(verbs_on(&without, "capturepolicies").is_empty());
    let queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/forensic-capture-findings";
    let with = chart::render("fc", "security", &set_string("findings.queueUrl", queue)).unwrap();
    assert!(verbs_on(&with, "forensiccaptures").contains(&"create".to_string()));
    assert_eq!(verbs_on(&with, "capturepolicies"), ["get", "list"]);
    assert_eq!(verbs_on(&with, "capturepolicies/status"), ["patch"]);
    let deployment = &chart::find(&with, "Deployment")[0];
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "FC_FINDING_QUEUE_URL" && e["value"] == queue), "{env:?}");
    let error = chart::render("fc", "security", &set_string("findings.queueUrl", "forensic-capture-findings")).expect_err("a queue name is not a URL");
    assert!(error.contains("/findings/queueUrl"), "{error}");
}

/// Sends an object to the API server as a server-side apply with dryRun=All: admission and validation run in
/// full, nothing is stored.
async fn dry_run_apply(client: &kube::Client, object: &Value) -> Result<(), String> {
    let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), object["apiVersion"].as_str().unwrap().to_string()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, object["kind"].as_str().unwrap());
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await.map_err(|e| format!("{gvk:?}: {e}"))?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), object["metadata"]["namespace"].as_str().expect("namespaced object with a namespace"), &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    let name = object["metadata"]["name"].as_str().unwrap();
    api.patch(name, &PatchParams::apply("forensic-capture-chart-test").dry_run().force(), &Patch::Apply(&dynamic))
        .await
        .map(|_| ())
        .map_err(|e| format!("{} {name}: {e}", object["kind"]))
}

#[tokio::test]
async fn every_rendered_object_passes_server_side_validation() {
    let client = stack().kube().await;
    let release_namespace = support::namespace(&client, "chart-dryrun").await;
    let watch_namespace = support::namespace(&client, "chart-dryrun-cases").await;
    for values in [vec![], every_feature(&watch_namespace)] {
        let objects = chart::render("dryrun", &release_namespace, &values).unwrap();
        assert!(objects.len() >= 10, "{}", chart::kinds_and_names(&objects).join(", "));
        for object in &objects {
            dry_run_apply(&client, object).await.unwrap_or_else(|e| panic!("the API server rejects {e}"));
        }
    }
}

/// The restricted Pod Security Standard, enforced by the API server's PodSecurity admission on a pod made
/// from the chart's template; a pod without the security context is refused there (the check is live).
#[tokio::test]
async fn the_controller_pod_is_admitted_under_the_restricted_pod_security_standard() {
    let client = stack().kube().await;
    let namespace = support::namespace(&client, "chart-pss").await;
    let labels = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(client.clone()).patch(&namespace, &PatchParams::default(), &Patch::Merge(&labels)).await.unwrap();
    let objects = chart::render("pss", &namespace, &[]).unwrap();
    // The pod's ServiceAccount must exist for admission.
    let account = serde_json::from_value(chart::find(&objects, "ServiceAccount")[0].clone()).unwrap();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &account).await.unwrap();

    let template = &chart::find(&objects, "Deployment")[0]["spec"]["template"];
    let pod_from = |spec: Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "controller", "namespace": namespace, "labels": template["metadata"]["labels"]}, "spec": spec})).unwrap()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    pods.create(&dry_run, &pod_from(template["spec"].clone())).await.expect("the chart's pod is admitted under restricted");

    let mut unconfined = template["spec"].clone();
    unconfined["containers"][0].as_object_mut().unwrap().remove("securityContext");
    unconfined.as_object_mut().unwrap().remove("securityContext");
    let refused = pods.create(&dry_run, &pod_from(unconfined)).await.expect_err("a pod without the security contexts is refused");
    assert!(refused.to_string().contains("violates PodSecurity \"restricted:latest\""), "{refused}");
}

async fn remove_service_monitor_crd(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "servicemonitors.monitoring.coreos.com";
    if crds.get_opt(name).await.unwrap().is_some() {
        crds.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_until("the ServiceMonitor API is gone", Duration::from_secs(60), || async {
        let groups = client.list_api_groups().await.unwrap();
        crds.get_opt(name).await.unwrap().is_none() && !groups.groups.iter().any(|g| g.name == "monitoring.coreos.com")
    })
    .await;
}

/// The smallest CRD that makes the API server serve monitoring.coreos.com/v1 ServiceMonitor.
async fn install_service_monitor_crd(client: &kube::Client) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor", "listKind": "ServiceMonitorList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch("servicemonitors.monitoring.coreos.com", &PatchParams::apply("forensic-capture-chart-test").force(), &Patch::Apply(&crd)).await.unwrap();
    kube::runtime::wait::await_condition(crds, "servicemonitors.monitoring.coreos.com", kube::runtime::wait::conditions::is_crd_established()).await.unwrap();
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |s: &[&str]| Some(s.iter().map(|x| x.to_string()).collect());
    PolicyRule { api_groups: strings(groups), resources: strings(resources), verbs: verbs.iter().map(|x| x.to_string()).collect(), ..Default::default() }
}

/// Whether the API server's RBAC lets `user` do `verb` (a SubjectAccessReview, as the authorizer sees it).
async fn allowed(client: &kube::Client, service_account: (&str, &str), verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> bool {
    let (account_namespace, name) = service_account;
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r.to_string(), Some(s.to_string())),
        None => (resource.to_string(), None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{account_namespace}:{name}")),
            groups: Some(vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{account_namespace}"), "system:authenticated".into()]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource),
                subresource,
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    reviews.create(&PostParams::default(), &review).await.unwrap().status.unwrap().allowed
}

#[tokio::test]
async fn helm_install_creates_every_object_and_a_service_monitor_only_where_the_monitoring_api_exists() {
    let client = stack().kube().await;
    let _apis = SERVED_APIS.lock().await;
    remove_service_monitor_crd(&client).await;

    let release = unique("fc");
    let namespace = unique("chart-install");
    chart::install(&release, &namespace, &[]).unwrap_or_else(|e| panic!("{e}"));
    let manifest = chart::installed_manifest(&release, &namespace);
    let fullname = format!("{release}-forensic-capture");
    let mut expected: Vec<String> = [
        format!("ClusterRole/{fullname}"),
        format!("ClusterRole/{fullname}-nodes"),
        format!("ClusterRoleBinding/{fullname}"),
        format!("ClusterRoleBinding/{fullname}-nodes"),
        format!("Deployment/{fullname}"),
        format!("PodDisruptionBudget/{fullname}"),
        format!("Role/{fullname}-leases"),
        format!("RoleBinding/{fullname}-leases"),
        format!("Service/{fullname}-metrics"),
        format!("ServiceAccount/{fullname}"),
    ]
    .into();
    assert_eq!(chart::kinds_and_names(&manifest), expected, "no ServiceMonitor without the monitoring API");
    for object in &manifest {
        // Each object is stored on the server as rendered (a dry-run apply of it changes nothing).
        dry_run_apply(&client, object).await.unwrap();
        let gvk = GroupVersionKind::try_from(&serde_json::from_value::<kube::api::TypeMeta>(object.clone()).unwrap()).unwrap();
        let (resource, capabilities) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), &namespace, &resource),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.get(object["metadata"]["name"].as_str().unwrap()).await.unwrap_or_else(|e| panic!("{} not stored: {e}", object["kind"]));
    }
    let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace).get(&fullname).await.unwrap();
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(deployment.spec.as_ref().unwrap().strategy.as_ref().unwrap().type_.as_deref(), Some("Recreate"));

    // The RBAC, rule by rule: the controller's resources, events, nodes get, leases in its namespace.
    let cluster_role = Api::<ClusterRole>::all(client.clone()).get(&fullname).await.unwrap();
    assert_eq!(
        cluster_role.rules.unwrap(),
        vec![
            rule(&["forensic-capture.dev"], &["forensiccaptures"], &["get", "list", "watch", "patch"]),
            rule(&["forensic-capture.dev"], &["forensiccaptures/status"], &["patch"]),
            rule(&["forensic-capture.dev"], &["containmentreleases"], &["get", "list", "watch"]),
            rule(&["forensic-capture.dev"], &["containmentreleases/status"], &["patch"]),
            rule(&["forensic-capture.dev"], &["captureapprovals", "forensicreadinesses"], &["get", "list", "watch"]),
            rule(&["forensic-capture.dev"], &["captureapprovals/status", "forensicreadinesses/status"], &["patch"]),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        ]
    );
    let nodes_role = Api::<ClusterRole>::all(client.clone()).get(&format!("{fullname}-nodes")).await.unwrap();
    assert_eq!(
        nodes_role.rules.unwrap(),
        vec![rule(&[""], &["nodes"], &["get", "patch"]), rule(&[""], &["pods"], &["get", "patch"]), rule(&["networking.k8s.io"], &["networkpolicies"], &["list", "create", "patch", "delete"])]
    );
    let leases_role = Api::<Role>::namespaced(client.clone(), &namespace).get(&format!("{fullname}-leases")).await.unwrap();
    assert_eq!(leases_role.rules.unwrap(), vec![rule(&["coordination.k8s.io"], &["leases"], &["get", "create", "update", "delete"])]);

    // What the authorizer concludes for the ServiceAccount, cluster-wide binding (no watchNamespace).
    let account = (namespace.as_str(), fullname.as_str());
    let elsewhere = Some("some-team");
    for (verb, group, resource, ns, expected) in [
        ("watch", "forensic-capture.dev", "forensiccaptures", None, true),
        ("patch", "forensic-capture.dev", "forensiccaptures/status", elsewhere, true),
        ("patch", "forensic-capture.dev", "containmentreleases/status", elsewhere, true),
        ("create", "events.k8s.io", "events", elsewhere, true),
        ("get", "", "nodes", None, true),
        ("update", "coordination.k8s.io", "leases", Some(namespace.as_str()), true),
        ("patch", "forensic-capture.dev", "captureapprovals/status", elsewhere, true),
        // Without findings.queueUrl there is no intake: no policies read, no captures created.
        ("create", "forensic-capture.dev", "forensiccaptures", elsewhere, false),
        ("list", "forensic-capture.dev", "capturepolicies", elsewhere, false),
        ("delete", "forensic-capture.dev", "forensiccaptures", elsewhere, false),
        ("update", "forensic-capture.dev", "forensiccaptures", elsewhere, false),
        ("list", "", "nodes", None, false),
        ("patch", "", "pods", elsewhere, true),
        ("delete", "", "pods", elsewhere, false),
        ("create", "", "pods/exec", elsewhere, false),
        ("update", "networking.k8s.io", "networkpolicies", elsewhere, false),
        ("get", "", "secrets", Some(namespace.as_str()), false),
        ("create", "coordination.k8s.io", "leases", elsewhere, false),
        ("create", "", "events", elsewhere, false),
    ] {
        assert_eq!(allowed(&client, account, verb, group, resource, ns).await, expected, "{verb} {group}/{resource} in {ns:?}");
    }

    // With the monitoring API served, a second release gets a ServiceMonitor selecting its metrics Service.
    install_service_monitor_crd(&client).await;
    let release = unique("fc");
    let namespace = unique("chart-install-sm");
    chart::install(&release, &namespace, &[]).unwrap_or_else(|e| panic!("{e}"));
    let fullname = format!("{release}-forensic-capture");
    expected = chart::kinds_and_names(&chart::installed_manifest(&release, &namespace));
    assert!(expected.contains(&format!("ServiceMonitor/{fullname}")), "{expected:?}");
    let monitors = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &namespace,
        &kube::api::ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor")),
    );
    let monitor = monitors.get(&fullname).await.expect("ServiceMonitor stored");
    let service = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), &namespace).get(&format!("{fullname}-metrics")).await.unwrap();
    assert_eq!(monitor.data["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(monitor.data["spec"]["endpoints"][0]["path"], "/metrics");
    for (key, value) in monitor.data["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(service.metadata.labels.as_ref().unwrap().get(key).map(String::as_str), value.as_str(), "Service label {key}");
    }
    assert_eq!(service.spec.unwrap().ports.unwrap()[0].name.as_deref(), Some("http-metrics"));
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden for the chart's ServiceAccount, got {other:?}"),
    }
}

#[tokio::test]
async fn the_controller_as_the_charts_service_account_completes_captures_and_is_refused_anything_else() {
    let stack = stack();
    let env = CaptureEnv::new("chart-rbac").await;
    let ec2 = stack.ec2().await;
    let release = unique("fc");
    let release_namespace = unique("chart-rbac-controller");
    let values: Vec<String> = [
        set_string("evidence.bucket", &env.bucket),
        set_string("evidence.prefix", "evidence"),
        set_string("evidence.presignRoleArn", PRESIGN_ROLE_ARN),
        set_string("avml.x86_64.uri", &env.avml_uri),
        set_string("avml.x86_64.sha256", &env.avml_sha256),
        set_string("controller.watchNamespace", &env.namespace),
        set("controller.commandDeliveryTimeoutSeconds", "30"),
        // The stack's S3 is moto, addressed path-style.
        set("controller.s3ForcePathStyle", "true"),
        set_string("aws.region", stack.region()),
    ]
    .into_iter()
    .flatten()
    .collect();
    {
        let _apis = SERVED_APIS.lock().await;
        chart::install(&release, &release_namespace, &values).unwrap_or_else(|e| panic!("{e}"));
    }

    // The controller process gets what the kubelet would give the chart's pod: the Deployment's environment and
    // a token of its ServiceAccount, nothing else from the cluster side.
    let fullname = format!("{release}-forensic-capture");
    let deployment = Api::<Deployment>::namespaced(env.kube.clone(), &release_namespace).get(&fullname).await.unwrap();
    let account = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap().service_account_name.clone().unwrap();
    let kubeconfig = chart::service_account_kubeconfig(&env.kube, &release_namespace, &account).await;
    let pod_name = format!("{fullname}-5d8c7b9f4-x2x7q");
    let mut controller_env = chart::container_env(&deployment, &pod_name);
    assert_eq!(controller_env.get("FC_LOCK_NAMESPACE"), Some(&release_namespace));
    assert_eq!(controller_env.get("FC_WATCH_NAMESPACE"), Some(&env.namespace));
    assert_eq!(controller_env.get("FC_EVIDENCE_BUCKET"), Some(&env.bucket));
    controller_env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
    // Several controllers share this machine: the metrics port is the one thing not taken from the chart.
    controller_env.insert("FC_METRICS_BIND_ADDRESS".into(), format!("127.0.0.1:{}", chart::free_port()));
    let pairs: Vec<(&str, String)> = controller_env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let _controller = ControllerProcess::start(&pairs, &format!("{release_namespace}-controller"));

    // A full capture: locks (Leases in the release namespace), status, finalizer, events, AWS.
    let instance = support::run_instance(&ec2, 1, &[]).await.instance_id;
    // Over 1% of the t3.micro's 1 GiB, so the chart's default quality gate passes the stand-in's image.
    set_instance_memory(&instance, 12 * 1024 * 1024);
    env.apply(&capture_yaml("full", &instance, "  isolation:\n    allowIngressCidrs: [203.0.113.7/32]\n")).await;
    let full = env.wait_completed("full").await;
    let status = full.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"), "{status:#?}");
    let built_symbols = usize::from(status.artifacts.iter().any(|a| a.name == "volatility-symbols"));
    assert_eq!(status.artifacts.len(), 6 + built_symbols, "memory, volatile, symbols, two snapshots, manifest (and Volatility symbols where the host kernel allows): {:#?}", status.artifacts);
    // Argo CD reads the same record as Healthy.
    let (health, message) = chart::argocd_health(&serde_json::to_value(&full).unwrap());
    assert_eq!((health.as_str(), message.as_str()), ("Healthy", "Isolated: every requested step completed"));

    // A target named by Node: the controller reads the Node (nodes get).
    let node_instance = support::run_instance(&ec2, 0, &[]).await.instance_id;
    let node_name = unique("ip-10-20-1-9");
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": node_name},
        "spec": {"providerID": format!("aws:///{}a/{node_instance}", stack.region())}
    }))
    .unwrap();
    Api::<Node>::all(env.kube.clone()).create(&PostParams::default(), &node).await.unwrap();
    env.apply(&format!(
        "apiVersion: forensic-capture.dev/v1alpha1\nkind: ForensicCapture\nmetadata:\n  name: by-node\nspec:\n  caseId: INC-9\n  target:\n    nodeName: {node_name}\n  memory: {{enabled: false}}\n  volatile: {{enabled: false}}\n  isolation: {{enabled: false}}\n"
    ))
    .await;
    let by_node = env.wait_completed("by-node").await;
    assert_eq!(by_node.status.as_ref().unwrap().phase, Some(Phase::Completed), "{:#?}", by_node.status);
    assert_eq!(by_node.status.as_ref().unwrap().target.as_ref().unwrap().instance_id, node_instance);

    // A pod target on that Node: the pod read, quarantined (its label patched, a NetworkPolicy applied after
    // listing the namespace's others) and its Node cordoned, then released, all under the chart's RBAC.
    let accounts = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(env.kube.clone(), &env.namespace);
    let _ = accounts.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap()).await;
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web-0"}, "spec": {"nodeName": node_name, "containers": [{"name": "app", "image": "busybox"}]}})).unwrap();
    Api::<Pod>::namespaced(env.kube.clone(), &env.namespace).create(&PostParams::default(), &pod).await.unwrap();
    env.apply(&format!(
        "apiVersion: forensic-capture.dev/v1alpha1\nkind: ForensicCapture\nmetadata:\n  name: by-pod\nspec:\n  caseId: INC-9\n  target:\n    podRef: {{namespace: {}, name: web-0}}\n  memory: {{enabled: false}}\n  volatile: {{enabled: false}}\n  disk: {{enabled: false}}\n  pod: {{cordon: true}}\n",
        env.namespace
    ))
    .await;
    let by_pod = env.wait_completed("by-pod").await.status.unwrap();
    assert_eq!(by_pod.phase, Some(Phase::Isolated), "{by_pod:#?}");
    let actions: Vec<(&str, forensic_capture::api::ActionState)> = by_pod.isolation.as_ref().unwrap().actions.iter().map(|a| (a.name.as_str(), a.state)).collect();
    assert_eq!(actions[..2], [("PodQuarantine", forensic_capture::api::ActionState::Applied), ("NodeCordon", forensic_capture::api::ActionState::Applied)], "{by_pod:#?}");
    let pod_released = env.release("release-by-pod", "by-pod", "false positive").await;
    assert!(pod_released.released_at.is_some(), "{pod_released:#?}");

    // A ContainmentRelease: read, and its status written.
    let releases: Api<ContainmentRelease> = Api::namespaced(env.kube.clone(), &env.namespace);
    let containment_release: ContainmentRelease = serde_yaml::from_str(
        "apiVersion: forensic-capture.dev/v1alpha1\nkind: ContainmentRelease\nmetadata:\n  name: release-full\nspec:\n  captureName: full\n  reason: evidence verified\n",
    )
    .unwrap();
    releases.create(&PostParams::default(), &containment_release).await.unwrap();
    wait_until("the release is Released", Duration::from_secs(60), || async {
        releases.get("release-full").await.unwrap().status.and_then(|s| s.phase).as_deref() == Some("Released")
    })
    .await;
    let released = serde_json::to_value(releases.get("release-full").await.unwrap()).unwrap();
    assert_eq!(chart::argocd_health(&released).0, "Healthy", "{released:#}");

    // Events were published under the chart's identity, with the pod name from the downward API.
    let events: Api<Event> = Api::namespaced(env.kube.clone(), &env.namespace);
    let ours: Vec<Event> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("full"))
        .collect();
    assert!(ours.iter().any(|e| e.reason.as_deref() == Some("Isolated")), "{ours:#?}");
    assert!(ours.iter().all(|e| e.reporting_instance.as_deref() == Some(pod_name.as_str())), "{ours:#?}");

    // Deleting a capture: the controller removes its finalizer (patch) and the object goes.
    env.captures().delete("full", &DeleteParams::default()).await.unwrap();
    wait_until("the deleted capture is gone", Duration::from_secs(60), || async { env.captures().get_opt("full").await.unwrap().is_none() }).await;

    // Anything beyond its role is refused to the same identity.
    let identity = chart::client_from_kubeconfig(&kubeconfig).await;
    let captures: Api<forensic_capture::api::ForensicCapture> = Api::namespaced(identity.clone(), &env.namespace);
    captures.get("by-node").await.expect("the controller's identity reads captures");
    forbidden(captures.delete("by-node", &DeleteParams::default()).await, "delete a capture");
    let new_capture: forensic_capture::api::ForensicCapture = serde_yaml::from_str(&capture_yaml("forged", &instance, "")).unwrap();
    forbidden(captures.create(&PostParams::default(), &new_capture).await, "create a capture");
    forbidden(Api::<Secret>::namespaced(identity.clone(), &release_namespace).list(&Default::default()).await, "list secrets in its own namespace");
    forbidden(Api::<Node>::all(identity.clone()).list(&Default::default()).await, "list nodes");
    forbidden(Api::<Pod>::namespaced(identity.clone(), &env.namespace).list(&Default::default()).await, "list pods");
    let other_namespace_captures: Api<forensic_capture::api::ForensicCapture> = Api::namespaced(identity.clone(), "default");
    forbidden(other_namespace_captures.list(&Default::default()).await, "list captures outside the watched namespace");
    let leases_elsewhere: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(identity, &env.namespace);
    forbidden(leases_elsewhere.list(&Default::default()).await, "list leases outside its namespace");
}
