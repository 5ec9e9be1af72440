//! Pod targets with spec.pod.cordon: the pod's node is cordoned (spec.unschedulable), so nothing new lands
//! beside a compromised pod while it is examined. Nothing is evicted. Release uncordons only a node this
//! capture cordoned: one that was already unschedulable stays as the operator left it.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{Action, Applied, Apply, Restore, Scope};
use crate::{
    api::{NodeCordonRecord, Reason},
    controller::failure::StepError,
};

pub struct NodeCordon;

async fn unschedulable(client: &kube::Client, node: &str, value: bool) -> Result<Node, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.patch(node, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"unschedulable": value}}))).await
}

impl Action for NodeCordon {
    fn name(&self) -> &'static str {
        "NodeCordon"
    }

    fn scope(&self) -> Scope {
        Scope::Pod
    }

    fn apply<'x>(&'x self, cx: &'x mut Apply<'_, '_>) -> BoxFuture<'x, Result<Applied, StepError>> {
        Box::pin(async move {
            if !cx.sc.capture.spec.pod.as_ref().is_some_and(|p| p.cordon) {
                return Ok(Applied::NotNeeded("not requested (spec.pod.cordon)".into()));
            }
            let Some(node) = cx.sc.target.node_name.clone() else {
                return Ok(Applied::NotNeeded("the target has no node".into()));
            };
            let client = cx.sc.ctx.client.clone();
            let subject = format!("Node {node}");
            if cx.record().node_cordon.is_none() {
                let nodes: Api<Node> = Api::all(client.clone());
                let found = nodes.get(&node).await.map_err(|e| super::kube_error(&subject, Reason::NodeNotFound, e))?;
                let was_unschedulable = found.spec.and_then(|s| s.unschedulable).unwrap_or(false);
                cx.record().node_cordon = Some(NodeCordonRecord { node_name: node.clone(), was_unschedulable });
                cx.save().await?;
            }
            if cx.record().node_cordon.as_ref().is_some_and(|r| r.was_unschedulable) {
                return Ok(Applied::NotNeeded(format!("Node {node} was already cordoned")));
            }
            unschedulable(&client, &node, true).await.map_err(|e| super::kube_error(&subject, Reason::NodeNotFound, e))?;
            Ok(Applied::Changed(format!("cordoned Node {node}: nothing new is scheduled on it; its pods keep running")))
        })
    }

    fn restore<'x>(&'x self, cx: &'x Restore<'_>) -> BoxFuture<'x, Result<String, StepError>> {
        Box::pin(async move {
            let Some(record) = &cx.record.node_cordon else {
                return Ok("no node was cordoned".into());
            };
            if record.was_unschedulable {
                return Ok(format!("Node {} was cordoned before the capture and stays so", record.node_name));
            }
            match unschedulable(cx.client, &record.node_name, false).await {
                Ok(_) => Ok(format!("uncordoned Node {}", record.node_name)),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(format!("Node {} is gone", record.node_name)),
                Err(e) => Err(super::kube_error(&format!("Node {}", record.node_name), Reason::NodeNotFound, e)),
            }
        })
    }
}
