//! The Argo CD health checks (argocd/resource_customizations/forensic-capture.dev/<Kind>/health.lua), run under
//! a real Lua 5.1 interpreter (Argo CD embeds gopher-lua, a Lua 5.1) against every case of their
//! health_test.yaml, in Argo CD's own test layout.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::chart::{argocd_health, health_dir};

const KINDS: [&str; 2] = ["ForensicCapture", "ContainmentRelease"];

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

fn cases(kind: &str) -> Vec<HealthTest> {
    let text = std::fs::read_to_string(health_dir(kind).join("health_test.yaml")).unwrap();
    serde_yaml::from_str::<HealthTests>(&text).expect("health_test.yaml in Argo CD's format").tests
}

fn testdata(kind: &str, path: &str) -> Value {
    let text = std::fs::read_to_string(health_dir(kind).join(path)).unwrap_or_else(|e| panic!("{kind}/{path}: {e}"));
    let object: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{kind}/{path}: {e}"));
    assert_eq!(object["kind"], kind, "{kind}/{path}");
    object
}

#[test]
fn every_health_test_case_gets_its_status_and_message_under_lua_5_1() {
    let mut wrong = Vec::new();
    for kind in KINDS {
        for case in cases(kind) {
            let (status, message) = argocd_health(&testdata(kind, &case.input_path));
            let expected = &case.health_status;
            if (status.as_str(), message.as_str()) != (expected.status.as_str(), expected.message.as_str()) {
                wrong.push(format!("{kind}/{}: expected {} {:?}, got {status} {message:?}", case.input_path, expected.status, expected.message));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_cases_cover_every_status_and_every_testdata_file() {
    for kind in KINDS {
        let cases = cases(kind);
        let statuses: BTreeSet<&str> = cases.iter().map(|c| c.health_status.status.as_str()).collect();
        // A capture waits for approval (Suspended); a release never waits for a person.
        let expected: BTreeSet<&str> = match kind {
            "ForensicCapture" => BTreeSet::from(["Degraded", "Healthy", "Progressing", "Suspended"]),
            _ => BTreeSet::from(["Degraded", "Healthy", "Progressing"]),
        };
        assert_eq!(statuses, expected, "{kind}");
        let listed: BTreeSet<String> = cases.iter().map(|c| c.input_path.clone()).collect();
        let on_disk: BTreeSet<String> = std::fs::read_dir(health_dir(kind).join("testdata"))
            .unwrap()
            .map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        assert_eq!(listed, on_disk, "{kind}: every testdata file is a case in health_test.yaml, and every case's file exists");
    }
}

/// Paths present in `written` but lost or changed in `reread`.
fn lost(path: &str, written: &Value, reread: &Value, out: &mut Vec<String>) {
    match (written, reread) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => lost(&format!("{path}.{k}"), v, w, out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost(&format!("{path}[{i}]"), v, w, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

/// Every field the test data sets is one the controller's types know, so the cases stay true to what the
/// controller writes: parsing into the Rust type and back keeps each of them.
#[test]
fn the_testdata_objects_are_resources_as_the_controller_writes_them() {
    fn reread(kind: &str, object: &Value) -> Result<Value, serde_json::Error> {
        match kind {
            "ForensicCapture" => serde_json::from_value::<forensic_capture::api::ForensicCapture>(object.clone()).map(|o| serde_json::to_value(o).unwrap()),
            _ => serde_json::from_value::<forensic_capture::api::ContainmentRelease>(object.clone()).map(|o| serde_json::to_value(o).unwrap()),
        }
    }
    for kind in KINDS {
        for case in cases(kind) {
            let object = testdata(kind, &case.input_path);
            let again = reread(kind, &object).unwrap_or_else(|e| panic!("{kind}/{}: not a {kind}: {e}", case.input_path));
            let mut unknown = Vec::new();
            lost("", &object, &again, &mut unknown);
            assert!(unknown.is_empty(), "{kind}/{}: fields the controller does not write: {unknown:?}", case.input_path);
        }
    }
}

/// docs/argocd.md carries each script for pasting into argocd-cm; it must be the tested one.
#[test]
fn the_argocd_cm_snippets_in_the_docs_are_the_tested_scripts() {
    let docs = std::fs::read_to_string(support::repo_root().join("docs/argocd.md")).unwrap();
    for kind in KINDS {
        let script = std::fs::read_to_string(health_dir(kind).join("health.lua")).unwrap();
        let key = format!("resource.customizations.health.forensic-capture.dev_{kind}: |");
        let start = docs.find(&key).unwrap_or_else(|| panic!("docs/argocd.md has no `{key}` snippet"));
        let body: Vec<&str> =
            docs[start + key.len()..].lines().skip(1).take_while(|l| !l.starts_with("```") && !l.trim_start().starts_with("resource.")).collect();
        let indent = body.iter().find(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).unwrap();
        let snippet: String = body.iter().map(|l| format!("{}\n", l.get(indent..).unwrap_or(""))).collect();
        assert!(
            snippet.trim_end() == script.trim_end(),
            "the argocd-cm snippet for {kind} in docs/argocd.md differs from its health.lua: paste health.lua under `{key}`, indented by {indent} spaces"
        );
    }
}
