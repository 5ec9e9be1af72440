//! A memory upload that outlives its presigned URLs. With IAM enforced, moto (through dev/moto-server) refuses
//! presigned requests after X-Amz-Expires, so the capture only succeeds if the instance moved on to the fresh
//! upload plans the controller wrote while the upload ran.

mod support;

use forensic_capture::api::{ArtifactType, StepState};
use support::{
    fixtures::capture_yaml,
    iam::{EnforcedAws, controller_policy},
};

const MIB: u64 = 1024 * 1024;
const URL_TTL_SECONDS: u64 = 24;

#[tokio::test]
async fn a_memory_upload_outliving_its_presigned_urls_moves_on_to_renewed_plans() {
    let aws = EnforcedAws::start("renewal").await;
    let admin = aws.admin_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&admin);
    let instance = support::run_instance(&ec2, 0, &[]).await.instance_id;
    // 80 MiB at 2 MiB/s: the stream lasts about 40 s, well over the URLs' lifetime; a part every 4 s.
    aws.set_slow_instance_memory(&instance, 80 * MIB, 2 * MIB);
    let env = aws.capture_env("renewal").await;
    let keys = aws.controller_identity(&env, &controller_policy(&env)).await;
    let mut settings = env.controller_env();
    settings.push(("FC_MEMORY_URL_TTL_SECONDS", URL_TTL_SECONDS.to_string()));
    let _controller = aws.start_controller_with(&env, &settings, &keys, "renewal");
    let started = std::time::Instant::now();
    env.apply(&capture_yaml("renewal", &instance, "  volatile: {enabled: false}\n  disk: {enabled: false}\n  isolation: {enabled: false}\n"))
        .await;
    let capture = env.wait_completed("renewal").await;
    let elapsed = started.elapsed();
    let status = capture.status.unwrap();
    let memory = status.steps.memory.clone().unwrap();
    assert_eq!(memory.state, StepState::Succeeded, "{status:#?}");
    assert!(elapsed.as_secs() > URL_TTL_SECONDS + 10, "the upload outlived the first plan's URLs: {elapsed:?}");
    let generations = memory.plan_generation.unwrap();
    assert!(generations >= 3, "plans renewed while the upload ran: generation {generations}");
    let image = status.artifacts.iter().find(|a| a.kind == ArtifactType::MemoryImage).unwrap();
    assert_eq!(image.size_bytes, Some((80 * MIB) as i64));

    // Plan 1's URLs are dead by now: the parts uploaded after them used renewed ones.
    let s3 = aws.s3(&aws.admin).await;
    let plan_key = image.uri.strip_prefix(&format!("s3://{}/", env.bucket)).unwrap().replace("memory.lime", "memory.upload-plan.1");
    let plan = s3.get_object().bucket(&env.bucket).key(&plan_key).send().await.unwrap().body.collect().await.unwrap().to_vec();
    let plan = String::from_utf8(plan).unwrap();
    let part_1 = plan.lines().find_map(|l| l.strip_prefix("part 1 ")).expect("plan 1 lists part 1");
    let refused = reqwest::Client::new().put(part_1).body(vec![0u8; 16]).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403, "an expired presigned URL is refused");
    println!("memory upload of 80 MiB over {elapsed:?} with {URL_TTL_SECONDS} s URLs: {generations} upload plans");
}
