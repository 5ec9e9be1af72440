//! The Argo CD health check for ForensicCapture (argocd/resource_customizations/...), run under a real Lua 5.1
//! interpreter (Argo CD embeds gopher-lua, a Lua 5.1) against every case of its health_test.yaml, in Argo CD's
//! own test layout.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::chart::{argocd_health, health_dir};

#[derive(serde::Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: String,
}

#[derive(serde::Deserialize)]
struct HealthStatus {
    status: String,
    message: String,
}

fn cases() -> Vec<HealthTest> {
    let text = std::fs::read_to_string(health_dir().join("health_test.yaml")).unwrap();
    serde_yaml::from_str::<HealthTests>(&text).expect("health_test.yaml in Argo CD's format").tests
}

fn testdata(path: &str) -> Value {
    let text = std::fs::read_to_string(health_dir().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_health_test_case_gets_its_status_and_message_under_lua_5_1() {
    let mut wrong = Vec::new();
    for case in cases() {
        let (status, message) = argocd_health(&testdata(&case.input_path));
        if (status.as_str(), message.as_str()) != (case.health_status.status.as_str(), case.health_status.message.as_str()) {
            wrong.push(format!(
                "{}: expected {} {:?}, got {status} {message:?}",
                case.input_path, case.health_status.status, case.health_status.message
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_cases_cover_every_status_and_every_testdata_file() {
    let cases = cases();
    let statuses: BTreeSet<&str> = cases.iter().map(|c| c.health_status.status.as_str()).collect();
    assert_eq!(statuses, BTreeSet::from(["Degraded", "Healthy", "Progressing"]));
    let listed: BTreeSet<String> = cases.iter().map(|c| c.input_path.clone()).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(health_dir().join("testdata"))
        .unwrap()
        .map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert_eq!(listed, on_disk, "every testdata file is a case in health_test.yaml, and every case's file exists");
}

/// Every field the test data sets is one the controller's types know, so the cases stay true to what the
/// controller writes: parsing into ForensicCapture and back keeps each of them.
#[test]
fn the_testdata_objects_are_forensic_captures_as_the_controller_writes_them() {
    fn missing(path: &str, written: &Value, reread: &Value, out: &mut Vec<String>) {
        match (written, reread) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in a {
                    match b.get(k) {
                        Some(w) => missing(&format!("{path}.{k}"), v, w, out),
                        None => out.push(format!("{path}.{k}")),
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (i, (v, w)) in a.iter().zip(b).enumerate() {
                    missing(&format!("{path}[{i}]"), v, w, out);
                }
            }
            (a, b) if a == b => {}
            (a, b) => out.push(format!("{path}: {a} became {b}")),
        }
    }
    for case in cases() {
        let object = testdata(&case.input_path);
        let capture: forensic_capture::api::ForensicCapture =
            serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{}: not a ForensicCapture: {e}", case.input_path));
        let mut unknown = Vec::new();
        missing("", &object, &serde_json::to_value(&capture).unwrap(), &mut unknown);
        assert!(unknown.is_empty(), "{}: fields the controller does not write: {unknown:?}", case.input_path);
    }
}

/// docs/argocd.md carries the script for pasting into argocd-cm; it must be the tested one.
#[test]
fn the_argocd_cm_snippet_in_the_docs_is_the_tested_script() {
    let script = std::fs::read_to_string(health_dir().join("health.lua")).unwrap();
    let docs = std::fs::read_to_string(support::repo_root().join("docs/argocd.md")).unwrap();
    let key = "resource.customizations.health.forensic-capture.dev_ForensicCapture: |";
    let start = docs.find(key).unwrap_or_else(|| panic!("docs/argocd.md has no `{key}` snippet"));
    let after = &docs[start + key.len()..];
    let body: Vec<&str> = after.lines().skip(1).take_while(|l| !l.starts_with("```")).collect();
    let indent = body.iter().find(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).unwrap();
    let snippet: String = body.iter().map(|l| format!("{}\n", l.get(indent..).unwrap_or(""))).collect();
    assert!(
        snippet.trim_end() == script.trim_end(),
        "the argocd-cm snippet in docs/argocd.md differs from health.lua: paste health.lua into it, indented by {indent} spaces"
    );
}
