//! The six operations, with the validation and status semantics of the real service.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use serde_json::{Value, json};

use crate::{
    Options,
    fleet::{Backing, Fleet, Ping, Scope},
    protocol::{ApiError, Call, opt_str, req_str},
    runner,
    store::{self, Command, Invocation, Status, Store, epoch},
    vm,
};

const DOCUMENT: &str = "AWS-RunShellScript";
const PLUGIN: &str = "aws:runShellScript";
const DEFAULT_EXECUTION_TIMEOUT: u64 = 3_600;
const MAX_EXECUTION_TIMEOUT: u64 = 172_800;
const DEFAULT_DELIVERY_TIMEOUT: u64 = 3_600;
const DELIVERY_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 30..=2_592_000;

pub struct Simulator {
    options: Options,
    fleet: Fleet,
    store: Mutex<Store>,
    pub vms: vm::Vms,
}

impl Simulator {
    pub fn new(options: Options, fleet: Fleet, vm_config: Option<vm::Config>) -> Self {
        let vms = vm::Vms::new(vm_config, &options.state_dir);
        Simulator { options, fleet, store: Mutex::new(Store::default()), vms }
    }

    /// Stops the guest of every instance that stopped or terminated in EC2 (a powered-off instance keeps no
    /// memory); the next command for a restarted instance boots a fresh guest.
    pub async fn stop_guests_of_gone_instances(self: Arc<Self>) {
        use aws_sdk_ec2::types::InstanceStateName;
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mut by_scope: std::collections::HashMap<Scope, Vec<String>> = Default::default();
            for (instance_id, scope) in self.vms.running() {
                by_scope.entry(scope).or_default().push(instance_id);
            }
            for (scope, ids) in by_scope {
                // When EC2 cannot be asked, nothing is stopped.
                let Ok(states) = self.fleet.instance_states(&scope, &ids).await else { continue };
                for id in ids {
                    let gone = match states.get(&id) {
                        None => Some("the instance no longer exists"),
                        Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown) => Some("the instance terminated"),
                        Some(InstanceStateName::Stopped | InstanceStateName::Stopping) => Some("the instance stopped"),
                        Some(_) => None,
                    };
                    if let Some(reason) = gone {
                        self.vms.stop(&id, reason).await;
                    }
                }
            }
        }
    }

    pub fn state_dir(&self) -> &std::path::Path {
        &self.options.state_dir
    }

    pub fn default_region(&self) -> &str {
        &self.options.default_region
    }

    pub async fn send_command(self: &Arc<Self>, call: &Call, input: &Value) -> Result<Value, ApiError> {
        let document = req_str(input, "DocumentName")?;
        if document != DOCUMENT {
            return Err(ApiError::client("InvalidDocument", format!("Document with name {document} does not exist (the simulator runs {DOCUMENT} only).")));
        }
        if input.get("Targets").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::client("ValidationException", "the SSM simulator supports InstanceIds, not Targets"));
        }
        let instance_ids = string_list(input.get("InstanceIds"));
        if instance_ids.is_empty() {
            return Err(ApiError::client("ValidationException", "InstanceIds must name at least one managed node"));
        }
        let parameters = input.get("Parameters").cloned().unwrap_or_else(|| json!({}));
        let commands = string_list(parameters.get("commands"));
        if commands.is_empty() {
            return Err(ApiError::client("InvalidParameters", "Parameter \"commands\" is required for document AWS-RunShellScript."));
        }
        let execution_timeout = match string_list(parameters.get("executionTimeout")).first() {
            None => DEFAULT_EXECUTION_TIMEOUT,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|t| (1..=MAX_EXECUTION_TIMEOUT).contains(t))
                .ok_or_else(|| ApiError::client("InvalidParameters", format!("Parameter \"executionTimeout\" \"{v}\" : does not match the allowed pattern (1-{MAX_EXECUTION_TIMEOUT} seconds).")))?,
        };
        let delivery_timeout = match input.get("TimeoutSeconds").and_then(Value::as_u64) {
            None => DEFAULT_DELIVERY_TIMEOUT,
            Some(t) if DELIVERY_TIMEOUT_RANGE.contains(&t) => t,
            Some(t) => {
                return Err(ApiError::client(
                    "ValidationException",
                    format!("1 validation error detected: Value '{t}' at 'timeoutSeconds' failed to satisfy constraint: Member must have value between 30 and 2592000"),
                ));
            }
        };
        let nodes = self.fleet.managed_nodes(&call.scope(), &instance_ids).await.map_err(ec2_unavailable)?;
        let unmanaged: Vec<&String> = instance_ids.iter().filter(|id| !nodes.iter().any(|n| &n.instance_id == *id)).collect();
        if !unmanaged.is_empty() {
            return Err(ApiError::client(
                "InvalidInstanceId",
                format!("Instances [{unmanaged:?}] not in a valid state for account {}", self.options.account_id),
            ));
        }

        let command = Command {
            id: uuid::Uuid::new_v4().to_string(),
            document_name: document.to_string(),
            comment: opt_str(input, "Comment").unwrap_or_default().to_string(),
            parameters,
            instance_ids: instance_ids.clone(),
            requested_at: Utc::now(),
            delivery_timeout_seconds: delivery_timeout,
            execution_timeout_seconds: execution_timeout,
        };
        let visible_at = Instant::now() + self.options.invocation_visibility_delay;
        let output = {
            let mut store = self.store.lock().unwrap();
            for id in &instance_ids {
                store.invocations.insert((command.id.clone(), id.clone()), Invocation::new(&command.id, id, visible_at));
            }
            let output = json!({"Command": store.command_json(&command)});
            store.commands.push(command);
            output
        };
        let command_id = output["Command"]["CommandId"].as_str().unwrap_or_default().to_string();
        let working_directory = string_list(output["Command"]["Parameters"].get("workingDirectory")).into_iter().next();
        for instance_id in instance_ids {
            let sim = Arc::clone(self);
            let (command_id, scope) = (command_id.clone(), call.scope());
            let (commands, working_directory) = (commands.clone(), working_directory.clone());
            tokio::spawn(async move {
                sim.deliver(scope, command_id, instance_id, commands, working_directory, delivery_timeout, execution_timeout).await;
            });
        }
        let store = self.store.lock().unwrap();
        let command = store.command(&command_id).expect("just stored");
        Ok(json!({"Command": store.command_json(command)}))
    }

    /// The agent's side: wait for the node to be reachable, then run the script.
    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        self: Arc<Self>,
        scope: Scope,
        command_id: String,
        instance_id: String,
        commands: Vec<String>,
        working_directory: Option<String>,
        delivery_timeout: u64,
        execution_timeout: u64,
    ) {
        let key = (command_id.clone(), instance_id.clone());
        let mut cancel = self.store.lock().unwrap().invocations[&key].cancel.subscribe();
        let delivery_timeout = self.options.max_delivery_timeout_seconds.map_or(delivery_timeout, |cap| cap.min(delivery_timeout));
        let deadline = Instant::now() + Duration::from_secs(delivery_timeout);
        tokio::time::sleep(self.options.delivery_delay).await;
        let node = loop {
            if *cancel.borrow() {
                return self.finish(&key, Status::Cancelled, "Cancelled", -1, b"", b"");
            }
            if let Ok(Some(node)) = self.fleet.managed_node(&scope, &instance_id).await
                && node.ping == Ping::Online
            {
                break node;
            }
            if Instant::now() >= deadline {
                return self.finish(&key, Status::TimedOut, "DeliveryTimedOut", -1, b"", b"");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = cancel.changed() => {}
            }
        };
        let tier = match node.backing {
            Backing::Host => runner::Tier::Host { writable: &self.options.host_writable_dirs, visible: &self.options.host_visible_dirs },
            _ => runner::Tier::Instance,
        };
        let guest = match node.backing {
            Backing::Sandbox | Backing::Host => None,
            Backing::Invalid(message) => return self.finish(&key, Status::Failed, "Failed", 1, b"", message.as_bytes()),
            Backing::Qemu { kernel_args, memory_mib } => {
                // The invocation stays Pending while the guest boots, as a command waits for an agent that is
                // still starting; a guest that cannot boot fails it with the reason and the console's end.
                tokio::select! {
                    guest = self.vms.ensure(&instance_id, &scope, &kernel_args, memory_mib) => match guest {
                        Ok(guest) => Some(guest),
                        Err(error) => {
                            let message = format!("failed to run commands: {error:#}");
                            return self.finish(&key, Status::Failed, "Failed", 1, b"", message.as_bytes());
                        }
                    },
                    _ = cancel.wait_for(|c| *c) => return self.finish(&key, Status::Cancelled, "Cancelled", -1, b"", b""),
                }
            }
        };
        {
            let mut store = self.store.lock().unwrap();
            let inv = store.invocations.get_mut(&key).expect("invocation exists");
            inv.status = Status::InProgress;
            inv.status_details = "InProgress".into();
            inv.started_at = Some(Utc::now());
        }
        let invocation = runner::Invocation {
            state_dir: &self.options.state_dir,
            instance_id: &instance_id,
            command_id: &command_id,
            commands: &commands,
            working_directory: working_directory.as_deref(),
            execution_timeout: Duration::from_secs(execution_timeout),
        };
        let run = match guest {
            None => runner::run(self.options.sandbox, tier, invocation, cancel).await,
            Some(guest) => self.vms.run(&guest, invocation, cancel).await,
        };
        match run {
            Ok(runner::Outcome::Exited { code: 0, stdout, stderr }) => self.finish(&key, Status::Success, "Success", 0, &stdout, &stderr),
            Ok(runner::Outcome::Exited { code, stdout, stderr }) => self.finish(&key, Status::Failed, "Failed", code, &stdout, &stderr),
            Ok(runner::Outcome::TimedOut { stdout, stderr }) => self.finish(&key, Status::TimedOut, "ExecutionTimedOut", -1, &stdout, &stderr),
            Ok(runner::Outcome::Cancelled { stdout, stderr }) => self.finish(&key, Status::Cancelled, "Cancelled", -1, &stdout, &stderr),
            Err(error) => {
                // The agent could not start the plugin at all, as when the document's runtime is missing.
                let message = format!("failed to run commands: {error:#}");
                self.finish(&key, Status::Failed, "Failed", 1, b"", message.as_bytes())
            }
        }
    }

    fn finish(&self, key: &(String, String), status: Status, details: &str, code: i32, stdout: &[u8], stderr: &[u8]) {
        if let Some(inv) = self.store.lock().unwrap().invocations.get_mut(key) {
            inv.finish(status, details, code, stdout, stderr);
        }
    }

    pub fn get_command_invocation(&self, input: &Value) -> Result<Value, ApiError> {
        let command_id = req_str(input, "CommandId")?;
        let instance_id = req_str(input, "InstanceId")?;
        if let Some(plugin) = opt_str(input, "PluginName").filter(|p| *p != PLUGIN) {
            return Err(ApiError::client("InvalidPluginName", format!("The plugin name {plugin} is not valid.")));
        }
        let store = self.store.lock().unwrap();
        let not_found = || ApiError::client("InvocationDoesNotExist", "");
        let inv = store.invocations.get(&(command_id.to_string(), instance_id.to_string())).ok_or_else(not_found)?;
        if Instant::now() < inv.visible_at {
            return Err(not_found());
        }
        let command = store.command(command_id).ok_or_else(not_found)?;
        let iso = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default();
        let elapsed = match (inv.started_at, inv.ended_at.or_else(|| inv.started_at.map(|_| Utc::now()))) {
            (Some(s), Some(e)) => format!("PT{:.3}S", (e - s).num_milliseconds() as f64 / 1000.0),
            _ => String::new(),
        };
        // Output is reported once the plugin has finished, as the real agent uploads it at the end.
        let (stdout, stderr) = if inv.status.is_terminal() { (inv.stdout.as_str(), inv.stderr.as_str()) } else { ("", "") };
        Ok(json!({
            "CommandId": inv.command_id,
            "InstanceId": inv.instance_id,
            "Comment": command.comment,
            "DocumentName": command.document_name,
            "DocumentVersion": "$DEFAULT",
            "PluginName": PLUGIN,
            "ResponseCode": inv.response_code,
            "ExecutionStartDateTime": iso(inv.started_at),
            "ExecutionElapsedTime": elapsed,
            "ExecutionEndDateTime": iso(inv.ended_at),
            "Status": inv.status.as_str(),
            "StatusDetails": inv.status_details,
            "StandardOutputContent": stdout,
            "StandardOutputUrl": "",
            "StandardErrorContent": stderr,
            "StandardErrorUrl": "",
            "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false},
        }))
    }

    pub fn list_commands(&self, input: &Value) -> Result<Value, ApiError> {
        let store = self.store.lock().unwrap();
        let command_id = opt_str(input, "CommandId");
        if let Some(id) = command_id.filter(|id| store.command(id).is_none()) {
            return Err(ApiError::client("InvalidCommandId", format!("Command ID {id} is not valid.")));
        }
        let instance_id = opt_str(input, "InstanceId");
        let filters = key_value_filters(input.get("Filters"), "key", "value");
        let matching: Vec<Value> = store
            .commands
            .iter()
            .rev() // newest first, as the service lists them
            .filter(|c| command_id.is_none_or(|id| c.id == id))
            .filter(|c| instance_id.is_none_or(|id| c.instance_ids.iter().any(|i| i == id)))
            .filter(|c| {
                filters.iter().all(|(key, value)| match key.as_str() {
                    "DocumentName" => &c.document_name == value,
                    "Status" => store.command_status(c).0.as_str() == value,
                    _ => true,
                })
            })
            .map(|c| store.command_json(c))
            .collect();
        Ok(page(input, "Commands", matching))
    }

    pub fn list_command_invocations(&self, input: &Value) -> Result<Value, ApiError> {
        let store = self.store.lock().unwrap();
        let command_id = opt_str(input, "CommandId");
        let instance_id = opt_str(input, "InstanceId");
        let details = input.get("Details").and_then(Value::as_bool).unwrap_or(false);
        let matching: Vec<Value> = store
            .commands
            .iter()
            .rev()
            .filter(|c| command_id.is_none_or(|id| c.id == id))
            .flat_map(|c| store.invocations_of(c).map(move |inv| (c, inv)))
            .filter(|(_, inv)| instance_id.is_none_or(|id| inv.instance_id == id))
            .map(|(c, inv)| {
                let mut v = json!({
                    "CommandId": c.id,
                    "InstanceId": inv.instance_id,
                    "InstanceName": "",
                    "Comment": c.comment,
                    "DocumentName": c.document_name,
                    "DocumentVersion": "$DEFAULT",
                    "RequestedDateTime": epoch(c.requested_at),
                    "Status": inv.status.as_str(),
                    "StatusDetails": inv.status_details,
                    "TraceOutput": "",
                    "StandardOutputUrl": "",
                    "StandardErrorUrl": "",
                    "CommandPlugins": [],
                    "ServiceRole": "",
                    "NotificationConfig": {},
                    "CloudWatchOutputConfig": {"CloudWatchOutputEnabled": false},
                });
                if details {
                    let mut plugin = json!({
                        "Name": PLUGIN,
                        "Status": inv.status.as_str(),
                        "StatusDetails": inv.status_details,
                        "ResponseCode": inv.response_code,
                        "Output": store::truncate_chars(&inv.stdout, store::PLUGIN_OUTPUT_LIMIT_CHARS),
                        "StandardOutputUrl": "",
                        "StandardErrorUrl": "",
                    });
                    if let Some(t) = inv.started_at {
                        plugin["ResponseStartDateTime"] = json!(epoch(t));
                    }
                    if let Some(t) = inv.ended_at {
                        plugin["ResponseFinishDateTime"] = json!(epoch(t));
                    }
                    v["CommandPlugins"] = json!([plugin]);
                }
                v
            })
            .collect();
        Ok(page(input, "CommandInvocations", matching))
    }

    pub async fn describe_instance_information(&self, call: &Call, input: &Value) -> Result<Value, ApiError> {
        let mut wanted_ids = Vec::new();
        let mut wanted_ping = Vec::new();
        for (key, values) in list_filters(input.get("Filters"), "Key", "Values").into_iter().chain(list_filters(input.get("InstanceInformationFilterList"), "key", "valueSet")) {
            match key.as_str() {
                "InstanceIds" => wanted_ids.extend(values),
                "PingStatus" => wanted_ping.extend(values),
                other => return Err(ApiError::client("InvalidInstanceInformationFilterValue", format!("filter key {other} is not supported by the SSM simulator"))),
            }
        }
        let nodes = self.fleet.managed_nodes(&call.scope(), &wanted_ids).await.map_err(ec2_unavailable)?;
        let now = epoch(Utc::now());
        let list: Vec<Value> = nodes
            .into_iter()
            .filter(|n| wanted_ping.is_empty() || wanted_ping.iter().any(|p| p == n.ping.as_str()))
            .map(|n| {
                json!({
                    "InstanceId": n.instance_id,
                    "PingStatus": n.ping.as_str(),
                    "LastPingDateTime": now,
                    "AgentVersion": "3.3.0.0",
                    "IsLatestVersion": true,
                    "PlatformType": n.platform_type,
                    "PlatformName": "Amazon Linux",
                    "PlatformVersion": "2023",
                    "ResourceType": "EC2Instance",
                    "IPAddress": n.ip_address.unwrap_or_default(),
                    "ComputerName": n.computer_name,
                    "AssociationStatus": "Success",
                    "SourceId": n.instance_id,
                    "SourceType": "AWS::EC2::Instance",
                })
            })
            .collect();
        Ok(page(input, "InstanceInformationList", list))
    }

    pub fn cancel_command(&self, input: &Value) -> Result<Value, ApiError> {
        let command_id = req_str(input, "CommandId")?;
        let only = string_list(input.get("InstanceIds"));
        let store = self.store.lock().unwrap();
        let command = store.command(command_id).ok_or_else(|| ApiError::client("InvalidCommandId", format!("Command ID {command_id} is not valid.")))?;
        for inv in store.invocations_of(command) {
            if !inv.status.is_terminal() && (only.is_empty() || only.contains(&inv.instance_id)) {
                inv.cancel.send_replace(true);
            }
        }
        Ok(json!({}))
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn list_filters(v: Option<&Value>, key: &str, values: &str) -> Vec<(String, Vec<String>)> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| Some((f.get(key)?.as_str()?.to_string(), string_list(f.get(values))))).collect())
        .unwrap_or_default()
}

fn key_value_filters(v: Option<&Value>, key: &str, value: &str) -> Vec<(String, String)> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| Some((f.get(key)?.as_str()?.to_string(), f.get(value)?.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// MaxResults/NextToken pagination; the token is the offset of the next item.
fn page(input: &Value, member: &str, items: Vec<Value>) -> Value {
    let max = input.get("MaxResults").and_then(Value::as_u64).unwrap_or(50).max(1) as usize;
    let start = opt_str(input, "NextToken").and_then(|t| t.parse::<usize>().ok()).unwrap_or(0);
    let end = (start + max).min(items.len());
    let mut out = json!({ member: items.get(start..end).unwrap_or(&[]) });
    if end < items.len() {
        out["NextToken"] = json!(end.to_string());
    }
    out
}

fn ec2_unavailable(error: anyhow::Error) -> ApiError {
    ApiError {
        code: "InternalServerError",
        message: format!("the simulator could not reach EC2 to resolve managed nodes: {error:#}"),
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
    }
}
