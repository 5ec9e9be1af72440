//! The Helm chart and the Argo CD health check under test: helm runs, rendered objects, a kubeconfig holding
//! a ServiceAccount's token, the controller environment a chart's Deployment defines, and the health script
//! run under Lua 5.1.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use serde_json::Value;

use super::{repo_root, stack, unique};

/// The oldest Kubernetes minor the chart supports (Chart.yaml kubeVersion); `helm template` defaults to an
/// older one.
pub const KUBE_VERSION: &str = "1.33.0";

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/forensic-capture")
}

/// Argo CD's layout: resource_customizations/<group>/<kind>/{health.lua,health_test.yaml,testdata/}.
pub fn health_dir(kind: &str) -> PathBuf {
    repo_root().join("argocd/resource_customizations/forensic-capture.dev").join(kind)
}

fn helm_bin() -> PathBuf {
    let bin = std::env::var("HELM_BIN").unwrap_or_else(|_| {
        panic!("HELM_BIN is not set: run the tests with dev/test, or `export HELM_BIN=\"$(dev/install-helm)\"` first")
    });
    PathBuf::from(bin)
}

/// Runs helm with a private HOME (its repository config, cache and the API discovery cache), so no run sees
/// another's cached view of which APIs the server offers. Returns stdout, or stderr as the error.
pub fn helm(args: &[&str]) -> Result<String, String> {
    let home = std::env::temp_dir().join(unique("fc-helm-home"));
    std::fs::create_dir_all(&home).unwrap();
    let mut command = Command::new(helm_bin());
    command.args(args).env_clear().env("HOME", &home).env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Ok(kubeconfig) = std::env::var("KUBECONFIG") {
        command.env("KUBECONFIG", kubeconfig);
    }
    let output = command.stdin(Stdio::null()).output().expect("run helm");
    let _ = std::fs::remove_dir_all(&home);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() { Ok(stdout) } else { Err(format!("helm {}: {stderr}{stdout}", args.join(" "))) }
}

/// `--set-string key=value`: the value stays a string whatever it looks like (a hex digest of digits only).
pub fn set_string(key: &str, value: &str) -> [String; 2] {
    ["--set-string".into(), format!("{key}={value}")]
}

/// `--set key=value`: numbers and booleans keep their type, as the schema wants.
pub fn set(key: &str, value: &str) -> [String; 2] {
    ["--set".into(), format!("{key}={value}")]
}

/// `helm template` of the chart, offline, as JSON objects (empty documents dropped).
pub fn render(release: &str, namespace: &str, values: &[String]) -> Result<Vec<Value>, String> {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["template", release, chart.as_str(), "--namespace", namespace, "--kube-version", KUBE_VERSION];
    args.extend(values.iter().map(String::as_str));
    Ok(documents(&helm(&args)?))
}

/// The objects of a multi-document YAML stream.
pub fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `Kind/name` of each object, sorted.
pub fn kinds_and_names(objects: &[Value]) -> Vec<String> {
    let mut list: Vec<String> =
        objects.iter().map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap())).collect();
    list.sort();
    list
}

pub fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// `helm install` into `namespace` (created by helm) on the stack's API server, without --wait: no kubelet
/// runs pods here.
pub fn install(release: &str, namespace: &str, values: &[String]) -> Result<String, String> {
    let chart = chart_dir().display().to_string();
    let kubeconfig = stack().var("KUBECONFIG").to_string();
    let mut args: Vec<&str> =
        vec!["install", release, chart.as_str(), "--namespace", namespace, "--create-namespace", "--kubeconfig", kubeconfig.as_str()];
    args.extend(values.iter().map(String::as_str));
    helm(&args)
}

/// The manifest of an installed release, as objects.
pub fn installed_manifest(release: &str, namespace: &str) -> Vec<Value> {
    let kubeconfig = stack().var("KUBECONFIG").to_string();
    documents(&helm(&["get", "manifest", release, "--namespace", namespace, "--kubeconfig", &kubeconfig]).expect("helm get manifest"))
}

/// A kubeconfig for the stack's API server that authenticates with a TokenRequest token of the ServiceAccount
/// `namespace/name`, exactly as a pod running under it would.
pub async fn service_account_kubeconfig(admin: &kube::Client, namespace: &str, name: &str) -> PathBuf {
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(admin.clone(), namespace);
    let token = accounts
        .create_token_request(name, &Default::default(), &request)
        .await
        .expect("TokenRequest for the chart's ServiceAccount")
        .status
        .expect("token in the TokenRequest status")
        .token;
    let admin_config: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(stack().var("KUBECONFIG")).unwrap()).unwrap();
    let cluster = admin_config["clusters"][0]["cluster"].clone();
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stack", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "stack", "user": name, "namespace": namespace}}],
        "current-context": name,
    });
    let dir = PathBuf::from(stack().var("FC_STACK_DIR")).join("kubeconfigs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{namespace}-{name}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

pub async fn client_from_kubeconfig(path: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

/// The controller container's environment as the Deployment defines it, with the downward API fields
/// resolved the way the kubelet would for a pod named `pod_name`.
pub fn container_env(deployment: &Deployment, pod_name: &str) -> BTreeMap<String, String> {
    let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let namespace = deployment.metadata.namespace.clone().unwrap();
    let mut env = BTreeMap::new();
    for var in pod.containers[0].env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => pod_name.to_string(),
                Some("metadata.namespace") => namespace.clone(),
                other => panic!("env {} comes from {other:?}, which this test does not resolve", var.name),
            },
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    env
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Lua table constructor for a JSON value, in the shape Argo CD hands a health script: objects become
/// string-keyed tables, arrays 1-based sequences, nulls absent.
pub fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A Lua 5.1 string literal: decimal escapes for every byte outside printable ASCII, quotes and backslashes.
fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for byte in s.bytes() {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(byte as char);
            }
            0x20..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("\\{byte:03}")),
        }
    }
    out.push('"');
    out
}

/// Runs the health.lua of the object's kind under `lua5.1` with `obj` set to `object`; returns (status, message).
pub fn argocd_health(object: &Value) -> (String, String) {
    let script = health_dir(object["kind"].as_str().expect("object with a kind")).join("health.lua");
    let harness = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message))\n",
        lua_literal(object),
        lua_string(&script.display().to_string())
    );
    let path = std::env::temp_dir().join(format!("{}.lua", unique("fc-health")));
    std::fs::write(&path, harness).unwrap();
    let output = Command::new("lua5.1").arg(&path).output().expect("run lua5.1 (Debian package lua5.1)");
    let _ = std::fs::remove_file(&path);
    assert!(output.status.success(), "health.lua failed under Lua 5.1: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let (status, message) = text.split_once('\n').expect("status and message");
    (status.to_string(), message.to_string())
}
