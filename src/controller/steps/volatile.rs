//! Volatile data and kernel symbol material, through one SSM command; both archives are PUT to presigned
//! URLs and then re-hashed by the controller.

use super::{POLL, Progress};
use crate::{
    acquisition,
    api::{ArtifactType, ForensicCaptureStatus, Reason, Step},
    aws::s3::{EvidenceStore, Presign},
    controller::{
        failure::StepError,
        protect,
        records::{self, upsert_artifact},
        ssm_command,
        status::Writer,
        step_context::StepContext,
        symbols,
    },
};

const STEP: Step = Step::Volatile;

pub async fn run(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Progress, StepError> {
    let (bucket, prefix) = sc.evidence()?;
    let volatile_key = sc.key(&prefix, "volatile.tar.gz");
    let symbols_key = sc.key(&prefix, "symbols.tar.gz");
    let instance_id = sc.instance_id().to_string();

    let prepare = || async {
        sc.check_bucket(&bucket).await?;
        let urls = sc
            .aws
            .store
            .presign(
                &[
                    Presign::Put { bucket: bucket.clone(), key: volatile_key.clone() },
                    Presign::Put { bucket: bucket.clone(), key: symbols_key.clone() },
                ],
                sc.ctx.config.url_ttl(),
                &format!("fc-{}-volatile", &sc.uid[..8.min(sc.uid.len())]),
            )
            .await
            .map_err(|e| StepError::on_instance(e, &instance_id, Reason::PresignFailed))?;
        let mut inputs = vec![("FC_VOLATILE_URL", urls[0].clone()), ("FC_SYMBOLS_URL", urls[1].clone())];
        inputs.extend(pod_inputs(sc.target.pod.as_ref()));
        let inputs: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        acquisition::command_lines(acquisition::VOLATILE_SCRIPT, &inputs).map_err(|e| StepError::failed(Reason::InvalidCommand, e.to_string()))
    };
    let Some(stdout) = ssm_command::ensure_output(sc, STEP, status, writer, sc.ctx.config.volatile_timeout_seconds, prepare).await? else {
        return Ok(Progress::Wait(POLL));
    };
    for (name, key, kind) in [("volatile", &volatile_key, ArtifactType::VolatileData), ("symbols", &symbols_key, ArtifactType::KernelSymbols)] {
        let mut artifact = super::verified_upload(sc, &stdout, "volatile", name, &bucket, key).await?.into_artifact(name, kind);
        artifact.started_at = records::record(STEP, status).started_at.clone();
        upsert_artifact(status, artifact.clone());
        artifact.lock = protect::object(sc, &bucket, key).await?;
        upsert_artifact(status, artifact);
    }
    symbols::build(sc, status, &bucket, &prefix, &symbols_key).await?;
    records::succeed(STEP, status);
    Ok(Progress::Continue)
}

/// For a pod target, what the script needs to find the pod on the node: its UID and its containers' runtime
/// IDs. Only characters such IDs have pass (they come from the API server, which the pod's owner can write to
/// in part): anything else is left out rather than put in a command.
fn pod_inputs(pod: Option<&crate::api::PodFacts>) -> Vec<(&'static str, String)> {
    let Some(pod) = pod else { return Vec::new() };
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let ids: Vec<&str> = pod
        .containers
        .iter()
        .filter_map(|c| c.container_id.as_deref())
        .map(|id| id.split_once("://").map_or(id, |(_, id)| id))
        .filter(|id| plain(id))
        .collect();
    let mut inputs = Vec::new();
    if plain(&pod.uid) {
        inputs.push(("FC_POD_UID", pod.uid.clone()));
        inputs.push(("FC_CONTAINER_IDS", ids.join(" ")));
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ContainerFacts, PodFacts};

    #[test]
    fn a_pod_target_passes_its_uid_and_plain_container_ids_only() {
        assert!(pod_inputs(None).is_empty(), "an instance target adds nothing");
        let container = |id: Option<&str>| ContainerFacts { name: "c".into(), image: "i".into(), container_id: id.map(String::from), kind: "Regular".into(), ..Default::default() };
        let pod = PodFacts {
            namespace: "web".into(),
            name: "p".into(),
            uid: "0b7c2a8e-2f3e-4f7a-9d55-3c1a2b4c5d6e".into(),
            containers: vec![container(Some("containerd://abc123")), container(None), container(Some("containerd://x;rm -rf /"))],
            ..Default::default()
        };
        assert_eq!(
            pod_inputs(Some(&pod)),
            [("FC_POD_UID", "0b7c2a8e-2f3e-4f7a-9d55-3c1a2b4c5d6e".to_string()), ("FC_CONTAINER_IDS", "abc123".to_string())],
            "not yet started containers and IDs with other characters are left out"
        );
        let odd = PodFacts { uid: "x'y".into(), ..pod };
        assert!(pod_inputs(Some(&odd)).is_empty(), "a UID that is not a UID adds nothing");
    }
}
