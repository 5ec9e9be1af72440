//! The IAM policies in iam/ against the code: they grant exactly the actions of the AWS operations the source
//! calls (found by reading the SDK crates the build uses, not from a hand-kept list), the presign role exactly
//! what presigned URLs need, and a capture succeeds under moto's IAM enforcement with nothing but
//! iam/controller-policy.json.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use aws_sdk_ec2::error::ProvideErrorMetadata;
use forensic_capture::api::{ArtifactType, Phase, StepState};
use support::{
    fixtures::capture_yaml,
    iam::{EnforcedAws, controller_policy, controller_policy_signing_with, credentials_policy, fleet_behind_a_load_balancer, instance_profile},
    repo_root,
};

/// Operations whose IAM actions are not `<prefix>:<Operation>` (AWS Service Authorization Reference).
const ACTIONS_FOR: &[(&str, &[&str])] = &[
    ("s3:HeadBucket", &["s3:ListBucket"]),
    ("s3:ListObjectsV2", &["s3:ListBucket"]),
    ("s3:HeadObject", &["s3:GetObject"]),
    ("s3:GetObjectAttributes", &["s3:GetObject", "s3:GetObjectAttributes"]),
    ("s3:CreateMultipartUpload", &["s3:PutObject"]),
    ("s3:UploadPart", &["s3:PutObject"]),
    ("s3:CompleteMultipartUpload", &["s3:PutObject"]),
    ("s3:ListMultipartUploads", &["s3:ListBucketMultipartUploads"]),
    ("s3:ListParts", &["s3:ListMultipartUploadParts"]),
    ("s3:GetObjectLockConfiguration", &["s3:GetBucketObjectLockConfiguration"]),
    // Tags given at creation need ec2:CreateTags too.
    ("ec2:CreateSnapshots", &["ec2:CreateSnapshots", "ec2:CreateTags"]),
    ("ec2:CopySnapshot", &["ec2:CopySnapshot", "ec2:CreateTags"]),
    ("ec2:CreateSecurityGroup", &["ec2:CreateSecurityGroup", "ec2:CreateTags"]),
    // A target-account session carries who asked (SourceIdentity) and the capture's tags; the presign
    // role's sessions carry neither, but the table is per operation, so the controller's policy grants these
    // two on the target roles only (its ReachWorkloadAccounts statement).
    ("sts:AssumeRole", &["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"]),
    // Giving an instance a profile passes the profile's role.
    ("ec2:ReplaceIamInstanceProfileAssociation", &["ec2:ReplaceIamInstanceProfileAssociation", "iam:PassRole"]),
    // AWS needs no permission for it ("No permissions are required to perform this operation").
    ("sts:GetCallerIdentity", &[]),
];

/// Actions on identities, keys and evidence, which a policy must grant on named resources only.
const SCOPED: &[&str] = &["s3:", "sts:", "kms:", "iam:PassRole", "iam:PutRolePolicy"];

/// One SDK crate: its client methods and the operation each one sends.
struct Sdk {
    /// How source files name the crate (`aws_sdk_ec2`).
    ident: String,
    /// The IAM service prefix (`ec2`, `elasticloadbalancing`).
    prefix: String,
    /// Client method -> operation name (`describe_instances` -> `DescribeInstances`).
    operations: BTreeMap<String, String>,
}

/// An operation the source calls: `<prefix>:<Operation>`, where, and whether it is only presigned.
struct Call {
    operation: String,
    file: String,
    presigned: bool,
}

fn without_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

fn ident_at(text: &str) -> &str {
    let end = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}

/// The aws-sdk-* crates the controller depends on, from Cargo.toml, at the versions Cargo.lock pins.
fn sdk_crates() -> Vec<(String, String)> {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let lock = std::fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let dependencies = manifest.split("\n[dependencies]\n").nth(1).expect("a [dependencies] table").split("\n[").next().unwrap();
    dependencies
        .lines()
        .filter(|l| l.starts_with("aws-sdk-"))
        .map(|l| {
            let name = ident_at(&l.replace('-', "_")).replace('_', "-");
            let entry = format!("name = \"{name}\"\nversion = \"");
            let version = lock.split(&entry).nth(1).unwrap_or_else(|| panic!("{name} in Cargo.lock")).split('"').next().unwrap();
            (name, version.to_string())
        })
        .collect()
}

/// Where cargo unpacked a crate's sources.
fn crate_sources(name: &str, version: &str) -> PathBuf {
    let cargo_home = std::env::var("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let registries = cargo_home.join("registry/src");
    std::fs::read_dir(&registries)
        .unwrap_or_else(|e| panic!("{registries:?}: {e}"))
        .flatten()
        .map(|index| index.path().join(format!("{name}-{version}")))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("the sources of {name} {version} under {registries:?}"))
}

/// Reads an SDK crate's client: each `pub fn <method>(&self) -> crate::operation::<module>::builders::...`, and
/// the operation name that module registers (`Metadata::new("DescribeInstances", ...)`).
fn sdk(name: &str, version: &str) -> Sdk {
    let sources = crate_sources(name, version);
    let mut operations = BTreeMap::new();
    for file in std::fs::read_dir(sources.join("src/client")).unwrap().flatten().filter(|f| f.path().is_file()) {
        let text = without_whitespace(&std::fs::read_to_string(file.path()).unwrap());
        for declaration in text.split("pubfn").skip(1) {
            let method = ident_at(declaration);
            let signature = declaration[method.len()..].split('{').next().unwrap();
            let Some(module) = signature.strip_prefix("(&self").and_then(|s| s.split("->crate::operation::").nth(1)).map(ident_at) else {
                continue;
            };
            let operation = without_whitespace(&std::fs::read_to_string(sources.join(format!("src/operation/{module}.rs"))).unwrap());
            let op_name = operation.split("Metadata::new(\"").nth(1).and_then(|s| s.split('"').next()).expect("the operation's name");
            operations.insert(method.to_string(), op_name.to_string());
        }
    }
    let suffix = name.trim_start_matches("aws-sdk-");
    let prefix = match suffix {
        "elasticloadbalancingv2" => "elasticloadbalancing",
        other => other,
    };
    assert!(!operations.is_empty(), "no client operations found in {sources:?}");
    Sdk { ident: name.replace('-', "_"), prefix: prefix.into(), operations }
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Every `.<client method>()` in src/: an SDK call starts with an argument-less builder method (the project's
/// own methods with those names take arguments). A method several used SDKs share is attributed to the SDK the
/// file names; `presigned` when the builder chain ends in `.presigned(` rather than `.send()`.
fn calls() -> &'static [Call] {
    static CALLS: std::sync::OnceLock<Vec<Call>> = std::sync::OnceLock::new();
    CALLS.get_or_init(find_calls)
}

fn find_calls() -> Vec<Call> {
    let sdks: Vec<Sdk> = sdk_crates().iter().map(|(n, v)| sdk(n, v)).collect();
    let mut files = Vec::new();
    rust_files(&repo_root().join("src"), &mut files);
    let mut found = Vec::new();
    for path in files {
        let source = std::fs::read_to_string(&path).unwrap();
        let text = without_whitespace(&source);
        let file = path.strip_prefix(repo_root()).unwrap().display().to_string();
        for (at, _) in text.match_indices('.') {
            let rest = &text[at + 1..];
            let method = ident_at(rest);
            if method.is_empty() || !rest[method.len()..].starts_with("()") {
                continue;
            }
            let mut owners: Vec<&Sdk> = sdks.iter().filter(|s| s.operations.contains_key(method)).collect();
            if owners.len() > 1 {
                owners.retain(|s| source.contains(&s.ident));
            }
            match owners[..] {
                [] => continue,
                [sdk] => {
                    let chain = &rest[method.len()..];
                    let presigned = match (chain.find(".presigned("), chain.find(".send()")) {
                        (Some(p), Some(s)) => p < s,
                        (Some(_), None) => true,
                        _ => false,
                    };
                    found.push(Call { operation: format!("{}:{}", sdk.prefix, sdk.operations[method]), file: file.clone(), presigned });
                }
                _ => panic!("{file}: .{method}() exists in several SDKs the file uses; name the client's crate in the file"),
            }
        }
    }
    assert!(!found.is_empty(), "no SDK calls found in src/");
    found
}

fn actions(operation: &str) -> Vec<String> {
    match ACTIONS_FOR.iter().find(|(op, _)| *op == operation) {
        Some((_, actions)) => actions.iter().map(|a| a.to_string()).collect(),
        None => vec![operation.to_string()],
    }
}

fn policy_document(file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join("iam").join(file)).unwrap_or_else(|e| panic!("iam/{file}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("iam/{file} is not JSON: {e}"))
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    }
}

/// The actions a policy file allows.
fn granted(file: &str) -> BTreeSet<String> {
    let document = policy_document(file);
    assert!(document["Statement"].is_array(), "iam/{file}: a Statement list");
    granted_in(&document)
}

/// "missing: ... (called in ...); unused: ..." when `needed` and `granted` differ.
fn difference(needed: &BTreeMap<String, BTreeSet<String>>, granted: &BTreeSet<String>) -> Option<String> {
    let missing: Vec<String> =
        needed.iter().filter(|(a, _)| !granted.contains(*a)).map(|(a, files)| format!("{a} (called in {})", Vec::from_iter(files.iter().cloned()).join(", "))).collect();
    let unused: Vec<&String> = granted.iter().filter(|a| !needed.contains_key(*a)).collect();
    (!missing.is_empty() || !unused.is_empty()).then(|| format!("missing from the policy: {missing:?}; granted but called nowhere: {unused:?}"))
}

fn needed<'a>(calls: impl IntoIterator<Item = &'a Call>) -> BTreeMap<String, BTreeSet<String>> {
    let mut needed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for call in calls {
        for action in actions(&call.operation) {
            needed.entry(action).or_default().insert(call.file.clone());
        }
    }
    needed
}

/// `forensic-capture verify` keeps its own AWS calls in this file; it also reads objects through the store.
const VERIFIER_SOURCE: &str = "src/verify.rs";

#[test]
fn controller_policies_grant_exactly_the_actions_of_the_operations_the_code_calls() {
    // Without a presign role, presigned URLs are signed with the controller's own credentials: they count too.
    let needed = needed(calls().iter().filter(|c| c.file != VERIFIER_SOURCE));
    let base = granted("controller-policy.json");
    let credentials = granted("controller-credentials-policy.json");
    let intake = granted("finding-intake-policy.json");
    let both: Vec<&String> = base.intersection(&credentials).chain(base.intersection(&intake)).collect();
    assert!(both.is_empty(), "granted by two controller policies: {both:?}");
    let all: BTreeSet<String> = base.iter().chain(&credentials).chain(&intake).cloned().collect();
    if let Some(difference) = difference(&needed, &all) {
        panic!("iam/controller-policy.json + controller-credentials-policy.json + finding-intake-policy.json vs the code: {difference}");
    }
}

#[test]
fn verifier_policy_grants_exactly_what_forensic_capture_verify_calls() {
    let mut needed = needed(calls().iter().filter(|c| c.file == VERIFIER_SOURCE));
    assert!(needed.contains_key("kms:Verify"), "verify checks signatures in {VERIFIER_SOURCE}: {needed:?}");
    // Artifacts and the manifest are streamed through the evidence store's GetObject (src/aws/s3.rs).
    needed.entry("s3:GetObject".into()).or_default().insert("src/aws/s3.rs".into());
    if let Some(difference) = difference(&needed, &granted("verifier-policy.json")) {
        panic!("iam/verifier-policy.json vs the calls of forensic-capture verify: {difference}");
    }
}

#[test]
fn presign_role_policy_grants_exactly_what_presigned_urls_need() {
    let presigned: Vec<&Call> = calls().iter().filter(|c| c.presigned).collect();
    assert!(!presigned.is_empty(), "the code presigns URLs for instances");
    if let Some(difference) = difference(&needed(presigned), &granted("presign-role-policy.json")) {
        panic!("iam/presign-role-policy.json vs the presigned operations: {difference}");
    }
}

/// Services whose calls are about the instance: through the target account's session when the capture names
/// another account (src/controller/clients.rs). S3, KMS and STS stay with the controller's own identity.
const ABOUT_THE_INSTANCE: &[&str] = &["ec2:", "ssm:", "autoscaling:", "elasticloadbalancing:", "iam:"];

#[test]
fn target_role_policy_grants_exactly_the_calls_about_the_instance() {
    let about_instance: Vec<&Call> =
        calls().iter().filter(|c| c.file != VERIFIER_SOURCE && ABOUT_THE_INSTANCE.iter().any(|p| c.operation.starts_with(p))).collect();
    // Credential containment is opt-in everywhere: in a workload account its statements join the target role.
    let allowed: BTreeSet<String> = granted("target-role-policy.json").union(&granted("controller-credentials-policy.json")).cloned().collect();
    if let Some(difference) = difference(&needed(about_instance), &allowed) {
        panic!("iam/target-role-policy.json (+ controller-credentials-policy.json) vs the calls about the instance: {difference}");
    }
    let base = granted("target-role-policy.json");
    let identity: Vec<&String> = base.iter().filter(|a| a.starts_with("s3:") || a.starts_with("kms:") || a.starts_with("sts:")).collect();
    assert!(identity.is_empty(), "the target role must not reach evidence, keys or identities: {identity:?}");
}

/// The calls the controller makes in a forensic account, through its role: copies (and finding them again),
/// and their locks. Sharing happens in the instance's account (src/aws/snapshot_share.rs).
const IN_THE_FORENSIC_ACCOUNT: &[&str] = &["src/aws/snapshot_copy.rs", "src/aws/snapshot_lock.rs"];

#[test]
fn forensic_role_policy_grants_exactly_the_copies_and_their_locks_and_keys_only_through_ec2() {
    let calls: Vec<&Call> = calls().iter().filter(|c| IN_THE_FORENSIC_ACCOUNT.contains(&c.file.as_str())).collect();
    assert!(calls.iter().any(|c| c.operation == "ec2:CopySnapshot"), "the copy is made in {IN_THE_FORENSIC_ACCOUNT:?}");
    let document = policy_document("forensic-role-policy.json");
    let ec2: BTreeSet<String> = granted_in(&document).into_iter().filter(|a| a.starts_with("ec2:")).collect();
    if let Some(difference) = difference(&needed(calls), &ec2) {
        panic!("iam/forensic-role-policy.json vs the calls in the forensic account: {difference}");
    }
    // EBS uses the keys on the caller's behalf (CopySnapshot re-encrypts): the KMS grants are for EC2 only.
    for file in ["forensic-role-policy.json", "target-role-share-key-policy.json"] {
        for statement in policy_document(file)["Statement"].as_array().unwrap() {
            if strings(&statement["Action"]).iter().any(|a| a.starts_with("kms:")) {
                assert_eq!(statement["Condition"]["StringLike"]["kms:ViaService"], "ec2.*.amazonaws.com", "iam/{file}: {statement}");
            }
        }
    }
    let other: Vec<String> = granted_in(&document).into_iter().filter(|a| !a.starts_with("ec2:") && !a.starts_with("kms:")).collect();
    assert!(other.is_empty(), "the forensic role reaches nothing but snapshots and their keys: {other:?}");
}

/// The actions of a policy document's Allow statements.
fn granted_in(document: &serde_json::Value) -> BTreeSet<String> {
    document["Statement"].as_array().unwrap().iter().filter(|s| s["Effect"] == "Allow").flat_map(|s| strings(&s["Action"])).collect()
}

#[test]
fn target_role_trust_admits_only_the_controller_with_who_asked_and_the_capture() {
    let trust = policy_document("target-role-trust-policy.json");
    let statements = trust["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{trust}");
    let statement = &statements[0];
    assert_eq!(statement["Principal"]["AWS"], "${ControllerRoleArn}", "only the controller's role");
    assert_eq!(strings(&statement["Action"]), ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"]);
    let condition = &statement["Condition"];
    assert_eq!(condition["StringEquals"]["sts:ExternalId"], "${ExternalId}");
    assert_eq!(condition["StringLike"]["sts:RoleSessionName"], "forensic-capture-*", "sessions are named after captures");
    assert_eq!(condition["Null"]["sts:SourceIdentity"], "false", "who asked must be given");
    assert_eq!(condition["Null"][format!("aws:RequestTag/{}", forensic_capture::aws::sessions::CAPTURE_UID_TAG)], "false", "the capture must be named");
    // The names the conditions rely on are the ones the controller gives.
    assert!(forensic_capture::aws::sessions::session_name("u").starts_with("forensic-capture-"));
}

#[test]
fn the_stackset_template_rolls_out_exactly_the_target_role_policies() {
    let text = std::fs::read_to_string(repo_root().join("iam/target-role-stackset.yaml")).unwrap();
    let template: serde_json::Value = serde_yaml::from_str(&text).expect("iam/target-role-stackset.yaml is plain YAML");
    let role = &template["Resources"]["TargetRole"]["Properties"];
    let policies = role["Policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1);
    let document = &policies[0]["PolicyDocument"];
    assert_eq!(granted_in(document), granted_in(&policy_document("target-role-policy.json")), "the template's permissions");
    let trust = policy_document("target-role-trust-policy.json");
    let statement = &role["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(strings(&statement["Action"]), strings(&trust["Statement"][0]["Action"]), "the template's trust actions");
    let [with_id, without_id] = [&statement["Condition"]["Fn::If"][1], &statement["Condition"]["Fn::If"][2]];
    let expected = &trust["Statement"][0]["Condition"];
    assert_eq!(with_id["StringLike"], expected["StringLike"]);
    assert_eq!(with_id["Null"], expected["Null"]);
    assert_eq!(with_id["StringEquals"]["sts:ExternalId"]["Ref"], "ExternalId");
    assert_eq!(without_id["StringLike"], expected["StringLike"]);
    assert_eq!(without_id["Null"], expected["Null"]);
    assert!(without_id.get("StringEquals").is_none(), "no external ID condition without one");
    assert_eq!(role["MaxSessionDuration"], 3600);
}

#[test]
fn evidence_identity_and_key_actions_are_granted_on_named_resources_only() {
    for file in [
        "controller-policy.json",
        "controller-credentials-policy.json",
        "presign-role-policy.json",
        "verifier-policy.json",
        "target-role-policy.json",
        "forensic-role-policy.json",
        "target-role-share-key-policy.json",
    ] {
        for statement in policy_document(file)["Statement"].as_array().unwrap() {
            let scoped: Vec<String> = strings(&statement["Action"]).into_iter().filter(|a| SCOPED.iter().any(|p| a.starts_with(p))).collect();
            let resources = strings(&statement["Resource"]);
            assert!(!resources.is_empty(), "iam/{file}: {statement} names no Resource");
            assert!(
                scoped.is_empty() || !resources.iter().any(|r| r == "*" || r.ends_with(":::*") || r.ends_with(":*")),
                "iam/{file}: {scoped:?} granted on {resources:?}"
            );
        }
    }
}

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn a_capture_and_its_release_succeed_with_credentials_bound_to_exactly_the_controller_policy() {
    let aws = EnforcedAws::start("least-privilege").await;
    let admin = aws.admin_config().await;
    let fleet = fleet_behind_a_load_balancer(&admin).await;
    let target = fleet.instances[0].clone();
    let ec2 = aws_sdk_ec2::Client::new(&admin);
    let address = ec2.allocate_address().domain(aws_sdk_ec2::types::DomainType::Vpc).send().await.unwrap();
    ec2.associate_address().allocation_id(address.allocation_id().unwrap()).instance_id(&target).send().await.unwrap();
    aws.set_instance_memory(&target, 6 * MIB + 321);
    let env = aws.capture_env("least-privilege").await;
    // The manifest is signed too, so kms:DescribeKey and kms:Sign are exercised under the policy.
    let kms = aws_sdk_kms::Client::new(&admin);
    let signing_key = kms
        .create_key()
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
        .send()
        .await
        .unwrap();
    let signing_key_arn = signing_key.key_metadata().unwrap().arn().unwrap().to_string();
    // moto authorizes KMS requests against the resource "*", never the key's ARN, so a statement naming the key
    // could never match there: the placeholder gets "*" here (docs/iam.md, "What moto cannot check").
    let keys = aws.controller_identity(&env, &controller_policy_signing_with(&env, "*")).await;
    let mut env_with_key = env.controller_env();
    env_with_key.push(("FC_KMS_SIGNING_KEY_ID", signing_key_arn.clone()));
    let _controller = aws.start_controller_with(&env, &env_with_key, &keys, "least-privilege");

    env.apply(&capture_yaml("least-privilege", &target, "  isolation:\n    allowIngressCidrs: [203.0.113.7/32]\n    disassociateElasticIps: true\n"))
        .await;
    let capture = env.wait_completed("least-privilege").await;
    let status = capture.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    let steps = &status.steps;
    for (name, step) in [("volatile", &steps.volatile), ("memory", &steps.memory), ("disk", &steps.disk), ("isolation", &steps.isolation)] {
        assert_eq!(step.as_ref().map(|s| s.state), Some(StepState::Succeeded), "{name}: {step:?}");
    }
    for kind in [
        ArtifactType::MemoryImage,
        ArtifactType::VolatileData,
        ArtifactType::KernelSymbols,
        ArtifactType::EbsSnapshot,
        ArtifactType::Manifest,
        ArtifactType::ManifestSignature,
    ] {
        assert!(status.artifacts.iter().any(|a| a.kind == kind), "a {kind:?} artifact: {:#?}", status.artifacts);
    }
    let actions: Vec<(String, String)> = status.isolation.unwrap().actions.into_iter().map(|a| (a.name, a.state.to_string())).collect();
    let applied = ["TerminationSafeguards", "InstanceTags", "AutoScaling", "LoadBalancers", "ElasticIps", "SecurityGroups"];
    let mut expected: Vec<(String, String)> = applied.iter().map(|n| (n.to_string(), "Applied".to_string())).collect();
    expected.push(("Credentials".into(), "NotNeeded".into()));
    assert_eq!(actions, expected);

    // Release undoes it under the same policy.
    let released = env.release("release", "least-privilege", "verified clean").await;
    assert_eq!(released.phase.as_deref(), Some("Released"), "{released:#?}");

    // Enforcement was on all along: the same identity is refused what the policy does not grant.
    let as_controller = aws.config(&keys).await;
    let refused = aws_sdk_ec2::Client::new(&as_controller).terminate_instances().instance_ids(&fleet.instances[1]).send().await.unwrap_err();
    assert_eq!(refused.code(), Some("AccessDenied"), "{:?}", refused.message());
    let tools = aws.s3(&keys).await.get_object().bucket(&env.bucket).key("tools/avml-x86_64").send().await;
    assert!(tools.is_err(), "the controller itself may not read the tools; only the presign role may");
}

#[tokio::test]
async fn credential_containment_succeeds_once_the_opt_in_policy_is_added() {
    let aws = EnforcedAws::start("credentials").await;
    let admin = aws.admin_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&admin);
    let iam = aws_sdk_iam::Client::new(&admin);
    let target = support::run_instance(&ec2, 0, &[]).await.instance_id;
    let (profile, role) = instance_profile(&iam, "web").await;
    let (deny_all, quarantine_role) = instance_profile(&iam, "quarantine").await;
    ec2.associate_iam_instance_profile()
        .instance_id(&target)
        .iam_instance_profile(aws_sdk_ec2::types::IamInstanceProfileSpecification::builder().arn(&profile).build())
        .send()
        .await
        .unwrap();
    let env = aws.capture_env("credentials").await;
    let mut policy: serde_json::Value = serde_json::from_str(&controller_policy(&env)).unwrap();
    let quarantine_role_arn = format!("arn:aws:iam::{}:role/{quarantine_role}", support::iam::ACCOUNT_ID);
    let opt_in: serde_json::Value = serde_json::from_str(&credentials_policy(&quarantine_role_arn)).unwrap();
    policy["Statement"].as_array_mut().unwrap().extend(opt_in["Statement"].as_array().unwrap().iter().cloned());
    let keys = aws.controller_identity(&env, &policy.to_string()).await;
    let _controller = aws.start_controller(&env, &keys, "credentials");

    env.apply(&capture_yaml(
        "credentials",
        &target,
        &format!(
            "  memory: {{enabled: false}}\n  volatile: {{enabled: false}}\n  disk: {{enabled: false}}\n  isolation:\n    credentials: {{replaceInstanceProfile: '{deny_all}', revokeSessions: true}}\n"
        ),
    ))
    .await;
    let capture = env.wait_completed("credentials").await;
    let status = capture.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    let credentials = status.isolation.unwrap().actions.into_iter().find(|a| a.name == "Credentials").unwrap();
    assert_eq!(credentials.state, "Applied", "{credentials:?}");
    let revocation = iam.list_role_policies().role_name(&role).send().await.unwrap();
    assert_eq!(revocation.policy_names().len(), 1, "the revocation policy, written on the instance role");
}
