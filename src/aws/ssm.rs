//! SSM Run Command: is the instance a managed node, send a shell script, follow its invocation.

use std::future::Future;

use aws_sdk_ssm::{
    operation::get_command_invocation::GetCommandInvocationError,
    types::{CommandInvocationStatus, InstanceInformationStringFilter, PingStatus},
};

use super::AwsError;

/// Where an invocation stands, with the service's quirks folded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Not yet visible (InvocationDoesNotExist right after SendCommand), Pending, InProgress or Delayed.
    Running,
    Succeeded { stdout: String },
    Failed { response_code: i32, stdout: String, stderr: String },
    /// The execution timeout expired on the instance.
    TimedOut { stdout: String, stderr: String },
    /// The agent never picked the command up (offline node).
    DeliveryTimedOut,
    Cancelled,
}

pub struct ShellCommand<'a> {
    pub instance_id: &'a str,
    /// Identifies the command for lookup after a restart; SSM keeps it in the command history.
    pub comment: &'a str,
    pub lines: Vec<String>,
    pub execution_timeout_seconds: u64,
    pub delivery_timeout_seconds: i32,
}

/// The SSM calls the controller makes.
pub trait SsmApi: Send + Sync {
    fn agent_online(&self, instance_id: &str) -> impl Future<Output = Result<bool, AwsError>> + Send;
    fn find_command(&self, instance_id: &str, comment: &str) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    fn send_shell(&self, command: ShellCommand<'_>) -> impl Future<Output = Result<String, AwsError>> + Send;
    fn invocation(&self, command_id: &str, instance_id: &str) -> impl Future<Output = Result<Invocation, AwsError>> + Send;
}

#[derive(Clone)]
pub struct SdkSsm(pub aws_sdk_ssm::Client);

impl SsmApi for SdkSsm {
    async fn agent_online(&self, instance_id: &str) -> Result<bool, AwsError> {
        let filter = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(instance_id)
            .build()
            .expect("key and values are set");
        let output = self
            .0
            .describe_instance_information()
            .filters(filter)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:DescribeInstanceInformation", e))?;
        Ok(output.instance_information_list().iter().any(|i| i.ping_status() == Some(&PingStatus::Online)))
    }

    async fn find_command(&self, instance_id: &str, comment: &str) -> Result<Option<String>, AwsError> {
        let mut pages = self.0.list_commands().instance_id(instance_id).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ssm:ListCommands", e))?;
            if let Some(found) = page.commands().iter().find(|c| c.comment() == Some(comment)) {
                return Ok(found.command_id().map(str::to_string));
            }
        }
        Ok(None)
    }

    async fn send_shell(&self, command: ShellCommand<'_>) -> Result<String, AwsError> {
        let output = self
            .0
            .send_command()
            .document_name("AWS-RunShellScript")
            .instance_ids(command.instance_id)
            .comment(command.comment)
            .timeout_seconds(command.delivery_timeout_seconds)
            .parameters("commands", command.lines)
            .parameters("executionTimeout", vec![command.execution_timeout_seconds.to_string()])
            .customize()
            .config_override(aws_sdk_ssm::config::Builder::default().retry_config(super::clients::single_attempt()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:SendCommand", e))?;
        output.command().and_then(|c| c.command_id()).map(str::to_string).ok_or_else(|| AwsError::local("ssm:SendCommand", "MissingCommandId", "the response carried no command ID"))
    }

    async fn invocation(&self, command_id: &str, instance_id: &str) -> Result<Invocation, AwsError> {
        let result = self.0.get_command_invocation().command_id(command_id).instance_id(instance_id).send().await;
        let output = match result {
            Ok(o) => o,
            // The service answers this for a short while after SendCommand: not an error, just not yet.
            Err(e) if matches!(e.as_service_error(), Some(GetCommandInvocationError::InvocationDoesNotExist(_))) => {
                return Ok(Invocation::Running);
            }
            Err(e) => return Err(AwsError::from_sdk("ssm:GetCommandInvocation", e)),
        };
        let stdout = output.standard_output_content().unwrap_or_default().to_string();
        let stderr = output.standard_error_content().unwrap_or_default().to_string();
        // StatusDetails spells timeouts with or without spaces depending on the API surface.
        let details = output.status_details().unwrap_or_default().replace(' ', "");
        Ok(match output.status() {
            Some(CommandInvocationStatus::Success) => Invocation::Succeeded { stdout },
            Some(CommandInvocationStatus::Failed) => Invocation::Failed { response_code: output.response_code(), stdout, stderr },
            Some(CommandInvocationStatus::TimedOut) if details == "DeliveryTimedOut" => Invocation::DeliveryTimedOut,
            Some(CommandInvocationStatus::TimedOut) => Invocation::TimedOut { stdout, stderr },
            Some(CommandInvocationStatus::Cancelled | CommandInvocationStatus::Cancelling) => Invocation::Cancelled,
            _ => Invocation::Running,
        })
    }
}
