//! The proof environment's control plane is a real kube-apiserver: CRDs, the status subresource, watches and
//! RBAC behave as in a cluster.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery::ApiResource,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

const GROUP: &str = "stack-test.forensic-capture.dev";

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{GROUP}")},
        "spec": {
            "group": GROUP,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
                    }
                }}
            }]
        }
    }))
    .unwrap()
}

async fn install_widget_crd(client: &kube::Client) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(&format!("widgets.{GROUP}"), &PatchParams::apply("stack-test").force(), &Patch::Apply(widget_crd()))
        .await
        .expect("apply CRD");
    kube::runtime::wait::await_condition(crds, &format!("widgets.{GROUP}"), kube::runtime::wait::conditions::is_crd_established())
        .await
        .expect("CRD established");
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Widget"), "widgets")
}

fn widget(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": 3}
    }))
    .unwrap()
}

#[tokio::test]
async fn api_server_reports_its_real_version() {
    let client = support::stack().kube().await;
    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(version.major, "1");
    assert!(version.git_version.starts_with("v1."), "gitVersion {:?}", version.git_version);
    assert!(version.minor.parse::<u32>().unwrap() >= 33);
}

#[tokio::test]
async fn status_patch_on_a_custom_resource_is_seen_by_a_watch() {
    let client = support::stack().kube().await;
    let resource = install_widget_crd(&client).await;
    let ns = support::namespace(&client, "stack-crd").await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    widgets.create(&PostParams::default(), &widget("w1")).await.expect("create widget");

    let seen = tokio::spawn({
        let widgets = widgets.clone();
        async move {
            watcher(widgets, watcher::Config::default().fields("metadata.name=w1"))
                .applied_objects()
                .try_filter(|w| futures::future::ready(w.data["status"]["phase"] == "Ready"))
                .boxed()
                .try_next()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    widgets
        .patch_status("w1", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Ready"}})))
        .await
        .expect("patch status");

    let observed = tokio::time::timeout(Duration::from_secs(20), seen).await.expect("watch saw the change in time");
    let object = observed.unwrap().expect("watch stream").expect("an object");
    assert_eq!(object.data["status"]["phase"], "Ready");
    assert_eq!(object.data["spec"]["size"], 3, "a status patch leaves the spec alone");
}

#[tokio::test]
async fn unprivileged_service_account_is_forbidden() {
    let stack = support::stack();
    let admin = stack.kube().await;
    let resource = install_widget_crd(&admin).await;
    let ns = support::namespace(&admin, "stack-rbac").await;
    let admin_widgets: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &resource);
    admin_widgets.create(&PostParams::default(), &widget("w1")).await.expect("admin creates");

    let nobody = stack.kube_as(&format!("system:serviceaccount:{ns}:nobody")).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(nobody, &ns, &resource);
    let expect_forbidden = |result: Result<DynamicObject, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{what}: {status:?}"),
        other => panic!("{what} should be forbidden, got {other:?}"),
    };
    expect_forbidden(widgets.create(&PostParams::default(), &widget("w2")).await, "create");
    expect_forbidden(
        widgets
            .patch_status("w1", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Hacked"}})))
            .await,
        "patch status",
    );
    match widgets.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("list should be forbidden, got {other:?}"),
    }
    let unchanged = admin_widgets.get("w1").await.unwrap();
    assert!(unchanged.data.get("status").is_none_or(|s| s["phase"] != "Hacked"));
}

/// What the controller's status writer relies on: a merge patch of the status subresource that carries a
/// resourceVersion is refused (409 Conflict) once the object has moved on, so a writer holding a stale copy
/// cannot overwrite a newer status; with the current resourceVersion it applies.
#[tokio::test]
async fn a_status_patch_with_a_stale_resource_version_is_refused() {
    let client = support::stack().kube().await;
    let resource = install_widget_crd(&client).await;
    let ns = support::namespace(&client, "stack-rv").await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let created = widgets.create(&PostParams::default(), &widget("w1")).await.expect("create widget");
    let stale = created.metadata.resource_version.clone().unwrap();
    let newer = widgets
        .patch_status("w1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"resourceVersion": stale}, "status": {"phase": "First"}})))
        .await
        .expect("the current resourceVersion applies");
    let refused = widgets
        .patch_status("w1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"resourceVersion": stale}, "status": {"phase": "Stale"}})))
        .await
        .expect_err("a stale resourceVersion is refused");
    assert!(matches!(&refused, kube::Error::Api(e) if e.code == 409), "{refused:?}");
    assert_eq!(widgets.get("w1").await.unwrap().data["status"]["phase"], "First", "the newer status stands");
    let current = newer.metadata.resource_version.unwrap();
    widgets
        .patch_status("w1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"resourceVersion": current}, "status": {"phase": "Second"}})))
        .await
        .expect("with the resourceVersion it returned, the next patch applies");
}
