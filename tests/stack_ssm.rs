//! The SSM Run Command simulator through aws-sdk-ssm: commands really run, with the service's statuses,
//! timeouts, truncation and the InvocationDoesNotExist window.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_ssm::{
    operation::get_command_invocation::{GetCommandInvocationError, GetCommandInvocationOutput},
    types::CommandInvocationStatus,
};

/// The same SendCommand whatever backs the instance (sandbox here, a guest in stack_vm).
use support::vm::send;

/// Polls like a careful client: InvocationDoesNotExist right after SendCommand is retried, not fatal.
async fn wait_for_result(ssm: &aws_sdk_ssm::Client, command_id: &str, instance_id: &str) -> (GetCommandInvocationOutput, u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut not_yet = 0;
    loop {
        assert!(Instant::now() < deadline, "command {command_id} did not finish");
        match ssm.get_command_invocation().command_id(command_id).instance_id(instance_id).send().await {
            Ok(out) if !matches!(out.status(), Some(CommandInvocationStatus::Pending | CommandInvocationStatus::InProgress | CommandInvocationStatus::Delayed)) => {
                return (out, not_yet);
            }
            Ok(_) => {}
            Err(e) if matches!(e.as_service_error(), Some(GetCommandInvocationError::InvocationDoesNotExist(_))) => not_yet += 1,
            Err(e) => panic!("GetCommandInvocation: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn online_instance() -> String {
    support::run_instance(&support::stack().ec2().await, 0, &[]).await.instance_id
}

#[tokio::test]
async fn echo_succeeds_with_its_output() {
    let ssm = support::stack().ssm().await;
    let id = online_instance().await;
    let command = send(&ssm, &id, &["echo hello from $(hostname)", "echo to-stderr >&2"], None).await;
    let (result, _) = wait_for_result(&ssm, &command, &id).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(result.response_code(), 0);
    assert_eq!(result.standard_output_content(), Some(format!("hello from {id}\n").as_str()));
    assert_eq!(result.standard_error_content(), Some("to-stderr\n"));
}

#[tokio::test]
async fn nonzero_exit_is_failed_with_its_response_code() {
    let ssm = support::stack().ssm().await;
    let id = online_instance().await;
    let command = send(&ssm, &id, &["echo partial", "exit 3"], None).await;
    let (result, _) = wait_for_result(&ssm, &command, &id).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Failed));
    assert_eq!(result.response_code(), 3);
    assert_eq!(result.standard_output_content(), Some("partial\n"));
}

#[tokio::test]
async fn command_past_its_execution_timeout_is_timed_out() {
    let ssm = support::stack().ssm().await;
    let id = online_instance().await;
    let started = Instant::now();
    let command = send(&ssm, &id, &["sleep 60"], Some(1)).await;
    let (result, _) = wait_for_result(&ssm, &command, &id).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::TimedOut));
    assert_eq!(result.status_details(), Some("ExecutionTimedOut"));
    assert!(started.elapsed() < Duration::from_secs(30), "the sleep was killed at the timeout");
}

#[tokio::test]
async fn offline_instance_is_delivery_timed_out() {
    let stack = support::stack();
    let ssm = stack.ssm().await;
    let id = support::run_instance(&stack.ec2().await, 0, &[("ssm-simulator:agent", "offline")]).await.instance_id;
    let info = ssm
        .describe_instance_information()
        .filters(aws_sdk_ssm::types::InstanceInformationStringFilter::builder().key("InstanceIds").values(&id).build().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(info.instance_information_list()[0].ping_status().map(|p| p.as_str()), Some("ConnectionLost"));
    let command = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(&id)
        .timeout_seconds(30)
        .parameters("commands", vec!["touch /tmp/should-never-run".into()])
        .send()
        .await
        .unwrap()
        .command()
        .unwrap()
        .command_id()
        .unwrap()
        .to_string();
    let (result, _) = wait_for_result(&ssm, &command, &id).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::TimedOut));
    assert_eq!(result.status_details(), Some("DeliveryTimedOut"));
    assert!(!stack.ssm_state_dir().join("instances").join(&id).join("disk/tmp/should-never-run").exists());
}

#[tokio::test]
async fn unknown_and_unmanaged_instances_are_rejected_like_the_service() {
    let stack = support::stack();
    let ssm = stack.ssm().await;
    let absent = support::run_instance(&stack.ec2().await, 0, &[("ssm-simulator:agent", "absent")]).await.instance_id;
    for id in ["i-0123456789abcdef0", absent.as_str()] {
        let err = ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .instance_ids(id)
            .parameters("commands", vec!["true".into()])
            .send()
            .await
            .expect_err("not a managed node");
        assert_eq!(err.as_service_error().and_then(|e| e.meta().code()), Some("InvalidInstanceId"), "{id}");
    }
}

#[tokio::test]
async fn stdout_is_truncated_at_24000_characters() {
    let ssm = support::stack().ssm().await;
    let id = online_instance().await;
    let command = send(&ssm, &id, &["head -c 30000 /dev/zero | tr '\\0' x", "head -c 9000 /dev/zero | tr '\\0' y >&2"], None).await;
    let (result, _) = wait_for_result(&ssm, &command, &id).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(result.standard_output_content().unwrap().chars().count(), 24_000);
    assert_eq!(result.standard_error_content().unwrap().chars().count(), 8_000);
}

#[tokio::test]
async fn invocation_does_not_exist_right_after_send_then_appears() {
    let ssm = support::stack().ssm().await;
    let id = online_instance().await;
    let command = send(&ssm, &id, &["echo ok"], None).await;
    let immediate = ssm.get_command_invocation().command_id(&command).instance_id(&id).send().await;
    let err = immediate.expect_err("the invocation is not visible yet");
    assert!(matches!(err.as_service_error(), Some(GetCommandInvocationError::InvocationDoesNotExist(_))), "{err:?}");
    let (result, not_yet) = wait_for_result(&ssm, &command, &id).await;
    assert!(not_yet >= 1);
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(result.standard_output_content(), Some("ok\n"));
}

#[tokio::test]
async fn cancel_stops_a_running_command_and_listings_show_it() {
    let ssm = support::stack().ssm().await;
    let id = online_instance().await;
    let command = send(&ssm, &id, &["sleep 60"], None).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    ssm.cancel_command().command_id(&command).send().await.expect("CancelCommand");
    let (result, _) = wait_for_result(&ssm, &command, &id).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Cancelled));

    let listed = ssm.list_commands().command_id(&command).send().await.unwrap();
    let listed = &listed.commands()[0];
    assert_eq!(listed.status().map(|s| s.as_str()), Some("Cancelled"));
    assert_eq!(listed.parameters().unwrap()["commands"], vec!["sleep 60".to_string()]);
    let invocations = ssm.list_command_invocations().command_id(&command).details(true).send().await.unwrap();
    assert_eq!(invocations.command_invocations().len(), 1);
    assert_eq!(invocations.command_invocations()[0].instance_id(), Some(id.as_str()));
}

#[tokio::test]
async fn commands_cannot_write_outside_the_instance_sandbox() {
    let stack = support::stack();
    let ssm = stack.ssm().await;
    let id = online_instance().await;
    let command = send(&ssm, &id, &["echo on-disk > /tmp/marker", "touch /etc/forensic-capture-escape"], None).await;
    let (result, _) = wait_for_result(&ssm, &command, &id).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Failed), "the host root is read-only");
    assert!(result.standard_error_content().unwrap().contains("Read-only file system"));
    let marker = stack.ssm_state_dir().join("instances").join(&id).join("disk/tmp/marker");
    assert_eq!(std::fs::read_to_string(marker).unwrap(), "on-disk\n", "/tmp is the instance's own disk");
    assert!(!std::path::Path::new("/etc/forensic-capture-escape").exists());
}

/// The simulator's denials (state dir `access-denied/<key>`): a listed key is refused the listed operation exactly as
/// SSM refuses a caller whose policy lacks it, and nobody else is, and the denial can be lifted.
#[tokio::test]
async fn a_denied_operation_is_refused_as_ssm_refuses_a_missing_permission() {
    use aws_sdk_ssm::error::ProvideErrorMetadata;
    let stack = support::stack();
    let key = format!("AKIAFCSIMDENY{:07}", std::process::id() % 10_000_000);
    let credentials = aws_sdk_ssm::config::Credentials::new(&key, stack.var("AWS_SECRET_ACCESS_KEY"), None, None, "deny-test");
    let config = aws_sdk_ssm::config::Builder::from(&stack.aws().await)
        .endpoint_url(stack.var("AWS_ENDPOINT_URL_SSM"))
        .credentials_provider(credentials)
        .build();
    let denied_client = aws_sdk_ssm::Client::from_conf(config);
    let id = online_instance().await;
    let describe = |client: &aws_sdk_ssm::Client| {
        client
            .describe_instance_information()
            .filters(aws_sdk_ssm::types::InstanceInformationStringFilter::builder().key("InstanceIds").values(&id).build().unwrap())
            .send()
    };
    let dir = stack.ssm_state_dir().join("access-denied");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&key), "DescribeInstanceInformation\n").unwrap();
    let error = describe(&denied_client).await.expect_err("denied");
    assert_eq!(error.code(), Some("AccessDeniedException"), "{error:?}");
    assert!(error.message().unwrap_or_default().contains("is not authorized to perform: ssm:DescribeInstanceInformation"), "{error:?}");
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert!(describe(&stack.ssm().await).await.is_ok(), "another key is not denied");
    assert!(denied_client.list_commands().send().await.is_ok(), "another operation is not denied");
    std::fs::remove_file(dir.join(&key)).unwrap();
    assert!(describe(&denied_client).await.is_ok(), "the denial is lifted without a restart");
}

/// A caller sees only the managed nodes of its own account, as with SSM: the simulator asks moto with the
/// caller's access key, which moto maps to the account of its role session.
#[tokio::test]
async fn each_account_sees_and_commands_only_its_own_instances() {
    let stack = support::stack();
    let in_b = stack.aws_in("333344445555").await;
    let instance = support::run_instance(&aws_sdk_ec2::Client::new(&in_b), 0, &[]).await.instance_id;
    let ssm_config = |config: &aws_config::SdkConfig| {
        aws_sdk_ssm::Client::from_conf(aws_sdk_ssm::config::Builder::from(config).endpoint_url(stack.var("AWS_ENDPOINT_URL_SSM")).build())
    };
    let ssm_b = ssm_config(&in_b);
    let ssm_a = stack.ssm().await;

    let listed = |ssm: aws_sdk_ssm::Client| {
        let instance = instance.clone();
        async move {
            let info = ssm
                .describe_instance_information()
                .filters(aws_sdk_ssm::types::InstanceInformationStringFilter::builder().key("InstanceIds").values(&instance).build().unwrap())
                .send()
                .await
                .unwrap();
            info.instance_information_list().iter().filter_map(|i| i.instance_id().map(str::to_string)).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(ssm_b.clone()).await, [instance.clone()], "account B sees its instance");
    assert!(listed(ssm_a.clone()).await.is_empty(), "account A does not");

    let command = send(&ssm_b, &instance, &["echo in account B"], None).await;
    let (result, _) = wait_for_result(&ssm_b, &command, &instance).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(result.standard_output_content(), Some("in account B\n"));
    let refused = ssm_a
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(&instance)
        .parameters("commands", vec!["echo from A".to_string()])
        .send()
        .await
        .expect_err("A cannot command B's instance");
    assert_eq!(aws_sdk_ssm::error::ProvideErrorMetadata::code(&refused), Some("InvalidInstanceId"));
}
