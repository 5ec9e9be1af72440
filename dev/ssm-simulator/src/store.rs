//! Commands and their per-instance invocations, with the status rules of the real service.

use std::{collections::HashMap, time::Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;

/// SSM keeps only this much of a plugin's output in the API (the rest goes to S3 when configured).
pub const STDOUT_LIMIT_CHARS: usize = 24_000;
pub const STDERR_LIMIT_CHARS: usize = 8_000;
/// ListCommandInvocations' plugin `Output` carries less.
pub const PLUGIN_OUTPUT_LIMIT_CHARS: usize = 2_500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    InProgress,
    Success,
    Failed,
    TimedOut,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::InProgress => "InProgress",
            Status::Success => "Success",
            Status::Failed => "Failed",
            Status::TimedOut => "TimedOut",
            Status::Cancelled => "Cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Pending | Status::InProgress)
    }
}

pub struct Command {
    pub id: String,
    pub document_name: String,
    pub comment: String,
    pub parameters: Value,
    pub instance_ids: Vec<String>,
    pub requested_at: DateTime<Utc>,
    pub delivery_timeout_seconds: u64,
    pub execution_timeout_seconds: u64,
}

pub struct Invocation {
    pub command_id: String,
    pub instance_id: String,
    /// Before this instant GetCommandInvocation answers InvocationDoesNotExist.
    pub visible_at: Instant,
    pub status: Status,
    /// Detail such as "Delivery Timed Out" / "Execution Timed Out"; equals the status name otherwise.
    pub status_details: String,
    pub response_code: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub stdout: String,
    pub stderr: String,
    pub cancel: watch::Sender<bool>,
}

impl Invocation {
    pub fn new(command_id: &str, instance_id: &str, visible_at: Instant) -> Self {
        Invocation {
            command_id: command_id.to_string(),
            instance_id: instance_id.to_string(),
            visible_at,
            status: Status::Pending,
            status_details: "Pending".into(),
            response_code: -1,
            started_at: None,
            ended_at: None,
            stdout: String::new(),
            stderr: String::new(),
            cancel: watch::channel(false).0,
        }
    }

    pub fn finish(&mut self, status: Status, details: &str, response_code: i32, stdout: &[u8], stderr: &[u8]) {
        self.status = status;
        self.status_details = details.to_string();
        self.response_code = response_code;
        self.ended_at = Some(Utc::now());
        self.stdout = truncate_chars(&String::from_utf8_lossy(stdout), STDOUT_LIMIT_CHARS);
        self.stderr = truncate_chars(&String::from_utf8_lossy(stderr), STDERR_LIMIT_CHARS);
    }
}

pub fn truncate_chars(s: &str, limit: usize) -> String {
    s.chars().take(limit).collect()
}

#[derive(Default)]
pub struct Store {
    /// Commands in the order they were sent, for ListCommands.
    pub commands: Vec<Command>,
    pub invocations: HashMap<(String, String), Invocation>,
}

impl Store {
    pub fn command(&self, id: &str) -> Option<&Command> {
        self.commands.iter().find(|c| c.id == id)
    }

    pub fn invocations_of<'a>(&'a self, command: &'a Command) -> impl Iterator<Item = &'a Invocation> + 'a {
        command
            .instance_ids
            .iter()
            .filter_map(move |i| self.invocations.get(&(command.id.clone(), i.clone())))
    }

    /// The command's overall status: the real service reports Pending/InProgress until every invocation is
    /// terminal, then Success only if all succeeded, else the worst outcome.
    pub fn command_status(&self, command: &Command) -> (Status, String) {
        let statuses: Vec<&Invocation> = self.invocations_of(command).collect();
        if statuses.iter().any(|i| i.status == Status::InProgress) {
            return (Status::InProgress, "InProgress".into());
        }
        if statuses.iter().any(|i| i.status == Status::Pending) {
            return (Status::Pending, "Pending".into());
        }
        for worst in [Status::Failed, Status::TimedOut, Status::Cancelled] {
            if let Some(i) = statuses.iter().find(|i| i.status == worst) {
                return (worst, i.status_details.clone());
            }
        }
        (Status::Success, "Success".into())
    }

    pub fn command_json(&self, command: &Command) -> Value {
        let (status, details) = self.command_status(command);
        let invocations: Vec<&Invocation> = self.invocations_of(command).collect();
        let completed = invocations.iter().filter(|i| i.status.is_terminal()).count();
        let errors = invocations.iter().filter(|i| matches!(i.status, Status::Failed | Status::TimedOut)).count();
        let delivery_timed_out = invocations.iter().filter(|i| i.status_details == "Delivery Timed Out").count();
        json!({
            "CommandId": command.id,
            "DocumentName": command.document_name,
            "DocumentVersion": "$DEFAULT",
            "Comment": command.comment,
            "ExpiresAfter": epoch(command.requested_at + chrono::Duration::seconds(command.delivery_timeout_seconds as i64 + command.execution_timeout_seconds as i64)),
            "Parameters": command.parameters,
            "InstanceIds": command.instance_ids,
            "Targets": [],
            "RequestedDateTime": epoch(command.requested_at),
            "Status": status.as_str(),
            "StatusDetails": details,
            "MaxConcurrency": "50",
            "MaxErrors": "0",
            "TargetCount": invocations.len(),
            "CompletedCount": completed,
            "ErrorCount": errors,
            "DeliveryTimedOutCount": delivery_timed_out,
            "ServiceRole": "",
            "NotificationConfig": {},
            "CloudWatchOutputConfig": {"CloudWatchOutputEnabled": false},
            "TimeoutSeconds": command.delivery_timeout_seconds,
        })
    }
}

/// Timestamps in the JSON protocol are epoch seconds.
pub fn epoch(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_at_a_character_count_not_a_byte_count() {
        let s = "é".repeat(30_000);
        let cut = truncate_chars(&s, STDOUT_LIMIT_CHARS);
        assert_eq!(cut.chars().count(), 24_000);
        assert_eq!(cut.len(), 48_000);
    }
}
