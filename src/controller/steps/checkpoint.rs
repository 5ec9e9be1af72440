//! Container checkpoints of a pod target (spec.pod.checkpoint): each running container is checkpointed by its
//! kubelet, asked through the API server's node proxy (`POST /api/v1/nodes/<node>/proxy/checkpoint/<namespace>/
//! <pod>/<container>`, which needs `nodes/proxy` create); the kubelet has the runtime (CRI CheckpointContainer,
//! CRIU underneath) write an archive on the node. One SSM command then hashes and PUTs every archive to a
//! presigned URL, and the controller re-hashes each upload from S3 before it becomes a ContainerCheckpoint
//! artifact. The archives are removed from the node by the next step, and only once verified.
//!
//! A container that cannot be checkpointed (not running, a runtime without checkpoints, a CRIU failure) is
//! recorded with its reason, and the others go on.

use std::time::Duration;

use super::{POLL, Progress};
use crate::{
    acquisition,
    api::{ArtifactContainer, ArtifactType, CheckpointRecord, ContainerFacts, ForensicCaptureStatus, PodFacts, Reason, Step},
    aws::s3::{EvidenceStore, Presign},
    controller::{
        failure::StepError,
        protect,
        records::{self, upsert_artifact},
        ssm_command,
        status::{Writer, now},
        step_context::StepContext,
    },
};

const STEP: Step = Step::Checkpoint;

/// What the kubelet answered a checkpoint request with.
#[derive(Debug, PartialEq)]
pub enum KubeletAnswer {
    /// The archive it wrote.
    Written(String),
    /// It cannot checkpoint at all, or the container could not be: (reason, message).
    Refused(Reason, String),
}

/// Reads the kubelet's answer: `{"items": ["<path>"]}` on success; an error status otherwise. A 404 is a pod or
/// container the kubelet no longer has, or a kubelet without the checkpoint API (the feature gate off); a CRI
/// "Unimplemented" is a runtime without checkpoints; anything else from the runtime is CRIU failing for this
/// container.
pub fn kubelet_answer(result: Result<String, kube::Error>, what: &str) -> Result<KubeletAnswer, StepError> {
    match result {
        Ok(body) => {
            let parsed: serde_json::Value = serde_json::from_str(&body).map_err(|e| StepError::failed(Reason::CheckpointFailed, format!("{what}: the kubelet's answer is not JSON ({e}): {body}")))?;
            match parsed["items"].as_array().and_then(|items| items.first()).and_then(|p| p.as_str()) {
                Some(path) => Ok(KubeletAnswer::Written(path.to_string())),
                None => Ok(KubeletAnswer::Refused(Reason::CheckpointFailed, format!("{what}: the kubelet named no archive: {body}"))),
            }
        }
        Err(kube::Error::Api(status)) => {
            let message = format!("{what}: {} (HTTP {})", status.message.trim(), status.code);
            let unimplemented = ["Unimplemented", "not implemented", "unknown method CheckpointContainer"].iter().any(|m| status.message.contains(m));
            match status.code {
                403 => Err(StepError::failed(Reason::AccessDenied, format!("{message}: checkpoints need nodes/proxy create for the controller (the chart's pods.checkpoint)"))),
                // The kubelet's own "pod does not exist" / "container ... does not exist".
                404 if status.message.contains("does not exist") => Ok(KubeletAnswer::Refused(Reason::ContainerNotRunning, message)),
                // No such route: a kubelet without the ContainerCheckpoint feature.
                404 => Ok(KubeletAnswer::Refused(Reason::CheckpointNotSupported, format!("{message}: the kubelet has no checkpoint API (feature gate ContainerCheckpoint)"))),
                _ if unimplemented => Ok(KubeletAnswer::Refused(Reason::CheckpointNotSupported, format!("{message}: the container runtime does not implement CRI CheckpointContainer"))),
                502..=504 => Err(StepError::retry(message)),
                _ => Ok(KubeletAnswer::Refused(Reason::CheckpointFailed, message)),
            }
        }
        Err(e) => Err(StepError::retry(format!("{what}: {e}"))),
    }
}

/// The containers a checkpoint is asked for: the pod's own (init containers have ended; an ephemeral debug
/// container is the responder's, not evidence).
fn checkpointed(pod: &PodFacts) -> impl Iterator<Item = &ContainerFacts> {
    pod.containers.iter().filter(|c| c.kind == "Regular")
}

fn record_for<'s>(status: &'s mut ForensicCaptureStatus, container: &ContainerFacts) -> &'s mut CheckpointRecord {
    if let Some(i) = status.checkpoints.iter().position(|c| c.container == container.name) {
        return &mut status.checkpoints[i];
    }
    status.checkpoints.push(CheckpointRecord { container: container.name.clone(), container_id: container.container_id.clone(), image_id: container.image_id.clone(), ..Default::default() });
    status.checkpoints.last_mut().expect("pushed")
}

async fn ask_kubelet(sc: &StepContext<'_>, node: &str, pod: &PodFacts, container: &str) -> Result<String, kube::Error> {
    let timeout = sc.ctx.config.checkpoint_timeout_seconds;
    let path = format!("/api/v1/nodes/{node}/proxy/checkpoint/{}/{}/{container}?timeout={timeout}", pod.namespace, pod.name);
    let request = http::Request::post(path).body(Vec::new()).expect("a request from a path");
    let client = sc.ctx.client.clone();
    // The kubelet answers when the runtime has written the archive; its own timeout bounds the wait.
    match tokio::time::timeout(Duration::from_secs(timeout + 30), client.request_text(request)).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Api(kube::core::Status::failure(&format!("no answer within {timeout} s"), "Timeout").with_code(504).boxed())),
    }
}

pub async fn run(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Progress, StepError> {
    let (Some(pod), Some(node)) = (sc.target.pod.clone(), sc.target.node_name.clone()) else {
        return Err(StepError::failed(Reason::InvalidTarget, "container checkpoints need a pod target on a node"));
    };
    // 1. The kubelet's checkpoints, one container at a time; the request is saved before it is made, so a
    // restart knows an archive may be on the node (the upload command reports such leftovers).
    for container in checkpointed(&pod) {
        let record = record_for(status, container);
        if record.node_path.is_some() || record.reason.is_some() {
            continue;
        }
        let what = format!("container {} of pod {}/{} on Node {node}", container.name, pod.namespace, pod.name);
        if container.state.as_deref() != Some("Running") || container.container_id.is_none() {
            record.reason = Some(Reason::ContainerNotRunning.as_str().into());
            record.message = Some(format!("{what} is {}: nothing to checkpoint", container.state.as_deref().unwrap_or("not started")));
            continue;
        }
        record.requested_at = Some(now());
        writer.save(status).await?;
        let answer = kubelet_answer(ask_kubelet(sc, &node, &pod, &container.name).await, &what)?;
        let record = record_for(status, container);
        match answer {
            KubeletAnswer::Written(path) => {
                record.node_path = Some(path);
                record.message = Some(format!("{what}: checkpointed by the kubelet"));
            }
            KubeletAnswer::Refused(reason, message) => {
                record.reason = Some(reason.as_str().into());
                record.message = Some(message);
            }
        }
        writer.save(status).await?;
    }

    // 2. Every archive off the node in one command, and each upload verified.
    let written: Vec<(String, String)> =
        status.checkpoints.iter().filter(|c| c.artifact.is_none()).filter_map(|c| c.node_path.clone().map(|p| (c.container.clone(), p))).collect();
    let logs: Vec<(String, String)> = status
        .checkpoints
        .iter()
        .filter(|c| c.reason.as_deref() == Some(Reason::CheckpointFailed.as_str()))
        .filter_map(|c| criu_log(c.message.as_deref()?).map(|log| (c.container.clone(), log)))
        .collect();
    let mut leftovers = Vec::new();
    if !written.is_empty() || !logs.is_empty() {
        match upload(sc, status, writer, &pod, &written, &logs).await? {
            Upload::Running => return Ok(Progress::Wait(POLL)),
            Upload::Verified { leftovers: found } => leftovers = found,
        }
    }
    finish(status, &pod, &leftovers)
}

/// The CRIU log a runtime's checkpoint error names (containerd: `criu failed: ... path= <state dir>/criu-dump.log`):
/// the kubelet's answer says only that CRIU failed, the log says why.
pub fn criu_log(message: &str) -> Option<String> {
    message.split_whitespace().map(|w| w.trim_end_matches([')', ',', ';'])).find(|w| w.starts_with('/') && w.ends_with("/criu-dump.log")).map(String::from)
}

/// Ends the step: succeeded when every container has a verified checkpoint, else failed with the first
/// container's reason and a message naming every one that has none.
/// Archives of the pod found on the node that are not this step's (an interrupted earlier attempt's) are
/// named in the message: they are neither uploaded nor removed, and hold the containers' memory.
fn finish(status: &mut ForensicCaptureStatus, pod: &PodFacts, leftovers: &[String]) -> Result<Progress, StepError> {
    let left = (!leftovers.is_empty()).then(|| format!("left on the node by an earlier attempt, not taken: {}", leftovers.join(", ")));
    let missing: Vec<&CheckpointRecord> = status.checkpoints.iter().filter(|c| c.artifact.is_none()).collect();
    if missing.is_empty() {
        records::end(STEP, status, crate::api::StepState::Succeeded, None, left);
        return Ok(Progress::Continue);
    }
    let reason = missing.iter().find_map(|c| c.reason.as_deref()).and_then(|r| r.parse::<Reason>().ok()).unwrap_or(Reason::CheckpointFailed);
    let taken = status.checkpoints.len() - missing.len();
    let details: Vec<String> = missing.iter().map(|c| format!("{} ({}: {})", c.container, c.reason.as_deref().unwrap_or("?"), c.message.as_deref().unwrap_or(""))).collect();
    let mut message = format!("pod {}/{}: {taken} of {} container(s) checkpointed; not: {}", pod.namespace, pod.name, status.checkpoints.len(), details.join("; "));
    if let Some(left) = left {
        message.push_str(&format!("; {left}"));
    }
    if taken == 0 && reason == Reason::CheckpointNotSupported {
        // Nothing could be taken on this node at all: the step did not run, as memory does not on an
        // unsupported architecture.
        records::end(STEP, status, crate::api::StepState::Skipped, Some(reason), Some(message));
        return Ok(Progress::Continue);
    }
    Err(StepError::failed(reason, message))
}

/// Where the upload command stands.
enum Upload {
    Running,
    /// Every archive it sent is a verified artifact; `leftovers` are other archives of the pod it saw.
    Verified { leftovers: Vec<String> },
}

/// The upload command for the archives (container, path on the node) not yet verified, which also reads the
/// CRIU logs (container, path) of the checkpoints that failed.
async fn upload(
    sc: &StepContext<'_>,
    status: &mut ForensicCaptureStatus,
    writer: &mut Writer<'_>,
    pod: &PodFacts,
    written: &[(String, String)],
    logs: &[(String, String)],
) -> Result<Upload, StepError> {
    let (bucket, prefix) = sc.evidence()?;
    let key_of = |container: &str| sc.key(&prefix, &format!("checkpoints/{container}.tar"));
    let instance_id = sc.instance_id().to_string();
    let prepare = || async {
        sc.check_bucket(&bucket).await?;
        let requests: Vec<Presign> = written.iter().map(|(container, _)| Presign::Put { bucket: bucket.clone(), key: key_of(container) }).collect();
        let urls = if requests.is_empty() {
            Vec::new()
        } else {
            sc.aws
                .store
                .presign(&requests, sc.ctx.config.url_ttl(), &format!("fc-{}-checkpoint", &sc.uid[..8.min(sc.uid.len())]))
                .await
                .map_err(|e| StepError::on_instance(e, &instance_id, Reason::PresignFailed))?
        };
        let paths: Vec<&str> = written.iter().map(|(_, p)| p.as_str()).collect();
        let log_paths: Vec<&str> = logs.iter().map(|(_, p)| p.as_str()).collect();
        let inputs = [
            ("FC_CHECKPOINT_MODE", "upload".to_string()),
            ("FC_CHECKPOINT_PATHS", paths.join(" ")),
            ("FC_CHECKPOINT_URLS", urls.join(" ")),
            ("FC_CHECKPOINT_PREFIX", format!("checkpoint-{}_{}-", pod.name, pod.namespace)),
            ("FC_CHECKPOINT_LOGS", log_paths.join(" ")),
        ];
        let inputs: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        acquisition::command_lines(acquisition::CHECKPOINT_SCRIPT, &inputs).map_err(|e| StepError::failed(Reason::InvalidCommand, e.to_string()))
    };
    let Some(stdout) = ssm_command::ensure_output(sc, STEP, status, writer, sc.ctx.config.checkpoint_timeout_seconds, prepare).await? else {
        return Ok(Upload::Running);
    };
    for (i, (container, _)) in logs.iter().enumerate() {
        let prefix = format!("FC-CRIU {i} ");
        let lines: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix(&prefix)).collect();
        if let Some(record) = status.checkpoints.iter_mut().find(|c| &c.container == container)
            && !lines.is_empty()
            && !record.message.as_deref().unwrap_or_default().contains("CRIU's log:")
        {
            record.message = Some(format!("{}; CRIU's log: {}", record.message.as_deref().unwrap_or_default(), lines.join(" | ")));
        }
    }
    let leftovers: Vec<String> = (0..).map_while(|n| acquisition::result(&stdout, &format!("leftover-{n}")).and_then(|r| r.get("path").cloned())).collect();
    for (i, (container, _)) in written.iter().enumerate() {
        let key = key_of(container);
        let name = format!("checkpoint-{container}");
        let verified = super::verified_upload(sc, &stdout, "checkpoint", &format!("checkpoint-{i}"), &bucket, &key).await?;
        let mut artifact = verified.into_artifact(&name, ArtifactType::ContainerCheckpoint);
        let facts = pod.containers.iter().find(|c| &c.name == container);
        artifact.container = Some(ArtifactContainer {
            pod: format!("{}/{}", pod.namespace, pod.name),
            name: container.clone(),
            container_id: facts.and_then(|c| c.container_id.clone()),
            image_id: facts.and_then(|c| c.image_id.clone()),
        });
        artifact.started_at = status.checkpoints.iter().find(|c| &c.container == container).and_then(|c| c.requested_at.clone());
        upsert_artifact(status, artifact.clone());
        artifact.lock = protect::object(sc, &bucket, &key).await?;
        upsert_artifact(status, artifact);
        if let Some(record) = status.checkpoints.iter_mut().find(|c| &c.container == container) {
            record.artifact = Some(name);
        }
    }
    if !leftovers.is_empty() {
        tracing::warn!(instance = %instance_id, ?leftovers, "checkpoint archives of the pod from an earlier attempt are on the node");
    }
    Ok(Upload::Verified { leftovers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: u16, message: &str) -> Result<String, kube::Error> {
        Err(kube::Error::Api(kube::core::Status::failure(message, "").with_code(code).boxed()))
    }

    fn reason(answer: Result<KubeletAnswer, StepError>) -> String {
        match answer {
            Ok(KubeletAnswer::Written(path)) => format!("written {path}"),
            Ok(KubeletAnswer::Refused(reason, _)) => reason.as_str().to_string(),
            Err(StepError::Failed { reason, .. }) => format!("failed {reason}"),
            Err(StepError::Retry { .. }) => "retry".into(),
            Err(StepError::Abort { reason, .. }) => format!("abort {reason}"),
        }
    }

    #[test]
    fn the_kubelet_s_answers_become_an_archive_or_a_specific_reason() {
        let what = "container app of pod web/p on Node n";
        assert_eq!(reason(kubelet_answer(Ok(r#"{"items":["/var/lib/kubelet/checkpoints/checkpoint-p_web-app-2026.tar"]}"#.into()), what)), "written /var/lib/kubelet/checkpoints/checkpoint-p_web-app-2026.tar");
        assert_eq!(reason(kubelet_answer(refusal(404, "404 page not found"), what)), "CheckpointNotSupported");
        assert_eq!(reason(kubelet_answer(refusal(404, "container app does not exist"), what)), "ContainerNotRunning");
        assert_eq!(
            reason(kubelet_answer(refusal(500, "checkpointing of web/p/app failed (rpc error: code = Unimplemented desc = unknown method CheckpointContainer for service runtime.v1.RuntimeService)"), what)),
            "CheckpointNotSupported"
        );
        assert_eq!(reason(kubelet_answer(refusal(500, "checkpointing of web/p/app failed (rpc error: code = Unknown desc = criu failed: Can't get rlimit 0: Operation not permitted)"), what)), "CheckpointFailed");
        assert_eq!(reason(kubelet_answer(refusal(403, "nodes \"n\" is forbidden: cannot create resource \"nodes/proxy\""), what)), "failed AccessDenied");
        assert_eq!(reason(kubelet_answer(refusal(503, "the kubelet is restarting"), what)), "retry");
        assert_eq!(reason(kubelet_answer(Ok("{}".into()), what)), "CheckpointFailed");
    }

    #[test]
    fn the_criu_log_is_found_in_containerd_s_error() {
        let message = "checkpointing of ns/p/app failed (rpc error: code = Unknown desc = checkpointing container \"3744\" failed: /usr/sbin/runc did not terminate successfully: exit status 1: criu failed: type NOTIFY errno 0 path= /s/io.containerd.runtime.v2.task/k8s.io/3744/criu-dump.log) (HTTP 500)";
        assert_eq!(criu_log(message).as_deref(), Some("/s/io.containerd.runtime.v2.task/k8s.io/3744/criu-dump.log"));
        assert_eq!(criu_log("criu failed: no log named"), None);
    }

    #[test]
    fn only_the_pod_s_own_containers_are_checkpointed() {
        let container = |name: &str, kind: &str| ContainerFacts { name: name.into(), kind: kind.into(), ..Default::default() };
        let pod = PodFacts { containers: vec![container("init", "Init"), container("app", "Regular"), container("debugger", "Ephemeral")], ..Default::default() };
        assert_eq!(checkpointed(&pod).map(|c| c.name.as_str()).collect::<Vec<_>>(), ["app"]);
    }
}
