//! End to end on the proof environment: a real API server, moto, the SSM simulator running the real
//! on-instance scripts, and the controller as a process.

mod support;

use std::collections::BTreeSet;

use forensic_capture::api::{ArtifactType, ForensicCapture, Phase};
use sha2::{Digest, Sha256};
use support::fixtures::{CaptureEnv, capture_yaml, download, set_instance_memory, tar_entries};

const MIB: u64 = 1024 * 1024;

fn condition<'a>(capture: &'a ForensicCapture, type_: &str) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    capture.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition"))
}

/// Every SSM command sent to the instance, with its parameters.
async fn commands_for(instance_id: &str) -> Vec<aws_sdk_ssm::types::Command> {
    let ssm = support::stack().ssm().await;
    ssm.list_commands().instance_id(instance_id).max_results(50).send().await.unwrap().commands().to_vec()
}

/// Files the commands left on the instance's disk areas (/tmp, /var/tmp in the sandbox).
fn files_on_instance_disk(instance_id: &str) -> Vec<String> {
    let disk = support::stack().ssm_state_dir().join("instances").join(instance_id).join("disk");
    let mut found = Vec::new();
    let mut stack = vec![disk];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn capture_of_a_two_volume_instance_reaches_isolated_with_every_artifact() {
    let stack = support::stack();
    let env = CaptureEnv::new("e2e").await;
    let ec2 = stack.ec2().await;
    let s3 = stack.s3().await;
    let instance = support::run_instance(&ec2, 1, &[]).await;
    let image_size = 20 * MIB + 12_345;
    set_instance_memory(&instance.instance_id, image_size);
    let _controller = env.start_controller("e2e");

    env.apply(&capture_yaml("full", &instance.instance_id, "  isolation:\n    allowIngressCidrs: [203.0.113.7/32]\n")).await;
    let capture = env.wait_completed("full").await;
    let status = capture.status.clone().unwrap();
    let uid = capture.metadata.uid.clone().unwrap();

    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    assert_eq!(condition(&capture, "Ready").status, "True");
    for c in ["Acquired", "Snapshotted", "Isolated"] {
        assert_eq!(condition(&capture, c).status, "True", "{c}");
    }
    assert_eq!(condition(&capture, "Failed").status, "False");
    let target = status.target.as_ref().unwrap();
    assert_eq!(target.vpc_id.as_deref(), Some(instance.vpc_id.as_str()));
    assert_eq!(target.architecture.as_deref(), Some("x86_64"));
    assert!(target.memory_mib.unwrap() > 0 && target.account_id.is_some() && target.availability_zone.is_some());

    // Memory: several parts, SHA-256 in status equals a recomputation over the downloaded bytes.
    let memory = status.artifacts.iter().find(|a| a.kind == ArtifactType::MemoryImage).expect("memory artifact");
    let expected_key = format!("evidence/INC-4711/{}/{uid}/memory.lime", instance.instance_id);
    assert_eq!(memory.uri, format!("s3://{}/{expected_key}", env.bucket));
    let image = download(&s3, &memory.uri).await;
    assert_eq!(image.len() as u64, image_size);
    assert_eq!(memory.size_bytes, Some(image_size as i64));
    assert_eq!(memory.sha256.as_deref(), Some(hex::encode(Sha256::digest(&image)).as_str()));
    assert_eq!(&image[..4], &0x4C69_4D45u32.to_le_bytes(), "a LiME image");
    let head = s3.head_object().bucket(&env.bucket).key(&expected_key).send().await.unwrap();
    let etag = head.e_tag().unwrap().trim_matches('"').to_string();
    let parts: u32 = etag.rsplit_once('-').map(|(_, n)| n.parse().unwrap()).expect("a multipart ETag");
    assert!(parts >= 3, "image of {image_size} bytes in {parts} parts");

    // Volatile data: every section is in the archive, and its hash matches the status.
    let volatile = status.artifacts.iter().find(|a| a.kind == ArtifactType::VolatileData).expect("volatile artifact");
    let archive = download(&s3, &volatile.uri).await;
    assert_eq!(volatile.sha256.as_deref(), Some(hex::encode(Sha256::digest(&archive)).as_str()));
    let mut entries = BTreeSet::new();
    let mut index = String::new();
    let mut tar = tar_entries(&archive);
    for (path, body) in tar.drain(..) {
        if path == "volatile/index.json" {
            index = String::from_utf8(body).unwrap();
        }
        entries.insert(path);
    }
    for section in [
        "processes.txt",
        "process-executables.tsv",
        "deleted-executables.tsv",
        "sockets.txt",
        "listening-open-files.txt",
        "kernel-modules.txt",
        "logins.txt",
        "users.txt",
        "persistence.txt",
        "recent-temp-files.tsv",
        "shell-histories.txt",
    ] {
        assert!(entries.contains(&format!("volatile/{section}")), "{section} missing from {entries:?}");
        assert!(index.contains(&format!("\"section\":\"{section}\"")), "{section} missing from index");
    }
    let symbols = status.artifacts.iter().find(|a| a.kind == ArtifactType::KernelSymbols).expect("symbols artifact");
    let symbol_entries: Vec<String> = tar_entries(&download(&s3, &symbols.uri).await).into_iter().map(|(p, _)| p).collect();
    for file in ["symbols/uname.txt", "symbols/version", "symbols/btf-vmlinux", "symbols/kallsyms"] {
        assert!(symbol_entries.contains(&file.to_string()), "{file} missing from {symbol_entries:?}");
    }

    // The quality gate's measurements: the stand-in's 3 ranges, its banner, no zero pages.
    let quality = memory.image.as_ref().expect("image quality recorded");
    assert_eq!(quality.ranges, 3);
    assert_eq!(quality.captured_bytes as u64, image_size - 3 * 32, "every byte but the three LiME headers");
    assert_eq!(quality.memory_bytes, Some(target.memory_mib.unwrap() * MIB as i64));
    assert!(quality.kernel_banner.as_deref().is_some_and(|b| b.starts_with("Linux version 6.1.0-fake")), "{quality:?}");
    assert!(quality.zero_page_percent < 1.0, "{quality:?}");

    // Volatility symbols, built by the controller from the archive: here the sandbox host's kernel, whose
    // kallsyms lists data symbols only when it is built with CONFIG_KALLSYMS_ALL. Without them no usable ISF
    // can be made, and the capture says so in a Warning event instead (tests/real_kernel.rs has the real one).
    let host_lists_globals = std::fs::read_to_string("/proc/kallsyms").is_ok_and(|k| k.lines().any(|l| l.ends_with(" init_task")));
    let isf = status.artifacts.iter().find(|a| a.kind == ArtifactType::VolatilitySymbols);
    if host_lists_globals {
        let isf = isf.expect("Volatility symbols artifact");
        assert_eq!(isf.uri, format!("s3://{}/evidence/INC-4711/{}/{uid}/volatility-symbols.json.xz", env.bucket, instance.instance_id));
        let isf_bytes = download(&s3, &isf.uri).await;
        assert_eq!(isf.sha256.as_deref(), Some(hex::encode(Sha256::digest(&isf_bytes)).as_str()));
        assert_eq!(&isf_bytes[..6], b"\xfd7zXZ\0", "xz-compressed");
    } else {
        assert!(isf.is_none(), "{isf:?}");
        let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(env.kube.clone(), &env.namespace);
        let warning = events.list(&Default::default()).await.unwrap().items.into_iter().find(|e| e.reason.as_deref() == Some("VolatilitySymbolsNotBuilt"));
        let note = warning.and_then(|e| e.note).expect("a VolatilitySymbolsNotBuilt warning");
        assert!(note.contains(&instance.instance_id) && note.contains("init_task") && note.contains("symbols.tar.gz"), "{note}");
    }
    let expected_artifacts = if host_lists_globals { 7 } else { 6 };

    // Disk: two snapshots carrying the capture UID tag, both listed as artifacts.
    let snapshots = ec2
        .describe_snapshots()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:forensic-capture.dev/capture-uid").values(&uid).build())
        .send()
        .await
        .unwrap();
    assert_eq!(snapshots.snapshots().len(), 2);
    let snapshot_artifacts = status.artifacts.iter().filter(|a| a.kind == ArtifactType::EbsSnapshot).count();
    assert_eq!(snapshot_artifacts, 2);

    // Isolation: every interface has only the isolation group; no egress; ingress from the responder only.
    let group_id = status.isolation.as_ref().unwrap().security_group_id.clone().unwrap();
    let described = ec2.describe_instances().instance_ids(&instance.instance_id).send().await.unwrap();
    for eni in described.reservations()[0].instances()[0].network_interfaces() {
        let groups: Vec<&str> = eni.groups().iter().filter_map(|g| g.group_id()).collect();
        assert_eq!(groups, vec![group_id.as_str()]);
    }
    assert!(!status.isolation.as_ref().unwrap().previous.is_empty(), "prior groups recorded");
    let group = ec2.describe_security_groups().group_ids(&group_id).send().await.unwrap();
    let group = &group.security_groups()[0];
    assert!(group.ip_permissions_egress().is_empty(), "no egress");
    let ingress: Vec<&str> = group.ip_permissions().iter().flat_map(|p| p.ip_ranges()).filter_map(|r| r.cidr_ip()).collect();
    assert_eq!(ingress, vec!["203.0.113.7/32"]);

    // Status lists every artifact, the manifest among them; the manifest records the same.
    assert_eq!(status.artifacts.len(), expected_artifacts, "{:#?}", status.artifacts);
    let manifest_artifact = status.artifacts.iter().find(|a| a.kind == ArtifactType::Manifest).expect("manifest artifact");
    assert_eq!(manifest_artifact.uri, format!("s3://{}/evidence/INC-4711/{}/{uid}/manifest.json", env.bucket, instance.instance_id));
    let manifest_bytes = download(&s3, &manifest_artifact.uri).await;
    assert_eq!(manifest_artifact.sha256.as_deref(), Some(hex::encode(Sha256::digest(&manifest_bytes)).as_str()));
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["capture"]["uid"], uid.as_str());
    assert_eq!(manifest["caseId"], "INC-4711");
    assert_eq!(manifest["artifacts"].as_array().unwrap().len(), expected_artifacts - 1, "every artifact but the manifest itself");
    assert_eq!(manifest["artifacts"][0]["sha256"].as_str(), status.artifacts[0].sha256.as_deref());
    assert_eq!(manifest["timeline"].as_array().unwrap().len(), 4);
    assert!(manifest["requestedBy"]["fieldManagers"].as_array().is_some_and(|m| !m.is_empty()));

    // No credentials in any SSM command text, and nothing written to the instance's disks.
    let commands = commands_for(&instance.instance_id).await;
    assert_eq!(commands.len(), 2, "one command for volatile data, one for memory");
    for command in &commands {
        let text = format!("{:?}", command.parameters());
        for secret in [stack.var("AWS_ACCESS_KEY_ID"), stack.var("AWS_SECRET_ACCESS_KEY")] {
            assert!(!text.contains(secret), "command {:?} contains a credential", command.command_id());
        }
        assert!(!text.contains("X-Amz-Credential=AKIA"), "URLs are signed by a scoped session, not long-term keys");
        // A script that calls a function or tool that is not there can still "succeed" past it; its stderr says so.
        let ssm = support::stack().ssm().await;
        let invocation = ssm
            .get_command_invocation()
            .command_id(command.command_id().unwrap())
            .instance_id(&instance.instance_id)
            .send()
            .await
            .unwrap();
        let stderr = invocation.standard_error_content().unwrap_or_default();
        assert!(!stderr.contains("command not found"), "command {:?} stderr: {stderr}", command.comment());
    }
    assert_eq!(files_on_instance_disk(&instance.instance_id), Vec::<String>::new());

    // Deleting the capture leaves every artifact, the manifest and the snapshots in place.
    env.captures().delete("full", &Default::default()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.captures().get_opt("full").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "deletion did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for artifact in &status.artifacts {
        match artifact.uri.strip_prefix("s3://").and_then(|u| u.split_once('/')) {
            Some((bucket, key)) => {
                let head = s3.head_object().bucket(bucket).key(key).send().await.unwrap_or_else(|e| panic!("{} gone: {e:?}", artifact.uri));
                assert_eq!(head.content_length(), artifact.size_bytes, "{}", artifact.uri);
            }
            None => {
                let snapshot_id = artifact.uri.rsplit('/').next().unwrap();
                let found = ec2.describe_snapshots().snapshot_ids(snapshot_id).send().await.expect("snapshot kept");
                assert_eq!(found.snapshots().len(), 1, "{}", artifact.uri);
            }
        }
    }
}

#[tokio::test]
async fn a_completed_capture_is_not_rewritten_and_its_transitions_are_events() {
    let stack = support::stack();
    let env = CaptureEnv::new("quiet").await;
    let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
    set_instance_memory(&instance, 9 * MIB);
    let _controller = env.start_controller("quiet");
    env.apply(&capture_yaml("quiet", &instance, "  memory: {enabled: false}\n")).await;
    let done = env.wait_completed("quiet").await;
    let ready = condition(&done, "Ready").clone();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    // Poke the controller with a metadata change: it reconciles, finds nothing to do, writes nothing.
    env.captures()
        .patch("quiet", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"poke": "1"}}})))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let later = env.captures().get("quiet").await.unwrap();
    assert_eq!(later.status, done.status, "status unchanged, timestamps included");
    assert_eq!(condition(&later, "Ready").last_transition_time, ready.last_transition_time);
    assert_eq!(condition(&later, "Acquired").reason, "Acquired", "volatile alone satisfies Acquired when memory is off");

    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(env.kube.clone(), &env.namespace);
    let reasons: BTreeSet<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("quiet"))
        .filter_map(|e| e.reason)
        .collect();
    for expected in ["VolatileStarted", "VolatileSucceeded", "DiskSucceeded", "IsolationSucceeded", "Isolated"] {
        assert!(reasons.contains(expected), "event {expected} missing from {reasons:?}");
    }
}

#[tokio::test]
async fn deleting_a_capture_in_flight_keeps_evidence_and_finishes_the_running_step() {
    let stack = support::stack();
    let env = CaptureEnv::new("delete").await;
    let ec2 = stack.ec2().await;
    let instance = support::run_instance(&ec2, 1, &[]).await.instance_id;
    set_instance_memory(&instance, 40 * MIB);
    let _controller = env.start_controller("delete");
    env.apply(&capture_yaml("doomed", &instance, "")).await;
    let running = env
        .wait_for("doomed", std::time::Duration::from_secs(60), |c| {
            c.status.as_ref().and_then(|s| s.steps.memory.as_ref()).is_some_and(|m| m.command_id.is_some())
        })
        .await;
    let uid = running.metadata.uid.clone().unwrap();
    env.captures().delete("doomed", &Default::default()).await.unwrap();

    // The finalizer holds the object until the memory step has ended and the rest is recorded as not done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while env.captures().get_opt("doomed").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "deletion did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(env.kube.clone(), &env.namespace);
    let reasons: Vec<String> = events.list(&Default::default()).await.unwrap().items.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "MemorySucceeded"), "the running memory step finished: {reasons:?}");
    assert!(reasons.iter().any(|r| r == "CaptureDeleted"), "later steps recorded as not done: {reasons:?}");
    let by_uid = aws_sdk_ec2::types::Filter::builder().name("tag:forensic-capture.dev/capture-uid").values(&uid).build();
    assert!(ec2.describe_snapshots().filters(by_uid.clone()).send().await.unwrap().snapshots().is_empty(), "no new step started");
    assert!(ec2.describe_security_groups().filters(by_uid).send().await.unwrap().security_groups().is_empty());

    // Evidence outlives the resource.
    let s3 = stack.s3().await;
    let key = format!("evidence/INC-4711/{instance}/{uid}/memory.lime");
    let head = s3.head_object().bucket(&env.bucket).key(&key).send().await.expect("memory image kept");
    assert_eq!(head.content_length(), Some(40 * MIB as i64));
    s3.head_object().bucket(&env.bucket).key(key.replace("memory.lime", "volatile.tar.gz")).send().await.expect("volatile kept");
}

#[tokio::test]
async fn a_node_name_target_resolves_through_the_provider_id() {
    let stack = support::stack();
    let env = CaptureEnv::new("node").await;
    let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
    let node_name = support::unique("ip-10-20-1-5");
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": node_name},
        "spec": {"providerID": format!("aws:///{}a/{instance}", stack.region())}
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(env.kube.clone()).create(&Default::default(), &node).await.unwrap();
    let _controller = env.start_controller("node");
    let yaml = format!(
        "apiVersion: forensic-capture.dev/v1alpha1\nkind: ForensicCapture\nmetadata:\n  name: by-node\nspec:\n  caseId: INC-9\n  target:\n    nodeName: {node_name}\n  memory: {{enabled: false}}\n  volatile: {{enabled: false}}\n  isolation: {{enabled: false}}\n"
    );
    env.apply(&yaml).await;
    let capture = env.wait_completed("by-node").await;
    let target = capture.status.as_ref().unwrap().target.clone().unwrap();
    assert_eq!(target.instance_id, instance);
    assert_eq!(target.node_name.as_deref(), Some(node_name.as_str()));
    assert_eq!(capture.status.unwrap().phase, Some(Phase::Completed));
}
