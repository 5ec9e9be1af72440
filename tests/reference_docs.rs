//! docs/reference.md against the sources it describes: every Helm value in charts/forensic-capture/values.yaml
//! with its default, every flag of `forensic-capture run --help` with its environment variable and default,
//! and every controller environment variable the chart sets. Each failure names the entry to add, change or
//! remove.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use support::chart;

fn reference() -> String {
    std::fs::read_to_string(support::repo_root().join("docs/reference.md")).expect("docs/reference.md")
}

/// The rows of the first Markdown table under `## <heading>`: cells with surrounding spaces trimmed.
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc.find(&format!("\n## {heading}\n")).unwrap_or_else(|| panic!("docs/reference.md has no `## {heading}` section"));
    let section = &doc[start + heading.len() + 5..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| l.trim().trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
        .collect()
}

/// `text` without one pair of surrounding backticks, if it has them.
fn code(text: &str) -> Option<&str> {
    text.strip_prefix('`')?.strip_suffix('`')
}

/// One flag of `run --help`.
#[derive(Debug, Clone, PartialEq)]
struct Flag {
    env: Option<String>,
    default: Option<String>,
    help: String,
}

/// Parses clap's long help: `--name <VALUE>` lines, each followed by its indented description, which ends
/// with `[env: NAME=]`, `[default: X]` and `[possible values: ...]`.
fn run_flags() -> BTreeMap<String, Flag> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_forensic-capture"))
        .args(["run", "--help"])
        .env_clear() // so clap shows no current values after `env: NAME=`
        .output()
        .expect("run forensic-capture run --help");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let finish = |entry: Option<(String, String)>, flags: &mut BTreeMap<String, Flag>| {
        if let Some((name, help)) = entry {
            let bracket = |tag: &str| {
                let start = help.find(&format!("[{tag}: "))? + tag.len() + 3;
                let end = start + help[start..].find(']')?;
                Some(help[start..end].to_string())
            };
            let env = bracket("env").map(|e| e.trim_end_matches('=').to_string());
            let default = bracket("default").map(|d| d.trim_matches('"').to_string());
            let help = help.find(" [").map_or(help.as_str(), |i| &help[..i]).trim().to_string();
            flags.insert(name, Flag { env, default, help });
        }
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if (2..=6).contains(&indent) && (trimmed.starts_with("--") || trimmed.starts_with("-h, --")) {
            finish(current.take(), &mut flags);
            let name = trimmed.trim_start_matches("-h, ").split_whitespace().next().unwrap().to_string();
            current = Some((name, String::new()));
        } else if let Some((_, help)) = current.as_mut() {
            help.push(' ');
            help.push_str(trimmed);
        }
    }
    finish(current, &mut flags);
    flags.remove("--help");
    assert!(flags.len() >= 15, "parsed too few flags from `run --help`: {flags:?}");
    flags
}

fn help_row(name: &str, flag: &Flag) -> String {
    format!(
        "| `{name}` | {} | {} | {} |",
        flag.env.as_deref().map_or("—".to_string(), |e| format!("`{e}`")),
        flag.default.as_deref().map_or("—".to_string(), |d| format!("`{d}`")),
        flag.help
    )
}

#[test]
fn every_controller_flag_is_in_the_reference_with_its_environment_variable_and_default() {
    let flags = run_flags();
    let rows = table(&reference(), "Controller flags");
    let mut documented = BTreeMap::new();
    let mut problems = Vec::new();
    for row in &rows {
        let name = code(&row[0]).unwrap_or_else(|| panic!("flag cell {:?} is not `--name`", row[0])).to_string();
        documented.insert(name.clone(), row.clone());
        match flags.get(&name) {
            None => problems.push(format!("docs/reference.md documents {name}, which `forensic-capture run --help` does not have: remove its row")),
            Some(flag) => {
                let env = code(&row[1]).map(str::to_string);
                let default = code(&row[2]).map(str::to_string);
                if env != flag.env || default != flag.default {
                    problems.push(format!(
                        "docs/reference.md row for {name} says env {env:?}, default {default:?}; the binary says env {:?}, default {:?}. Use:\n{}",
                        flag.env,
                        flag.default,
                        help_row(&name, flag)
                    ));
                }
            }
        }
    }
    for (name, flag) in &flags {
        if !documented.contains_key(name) {
            problems.push(format!(
                "docs/reference.md lacks the controller flag {name}: add this row to `## Controller flags`:\n{}",
                help_row(name, flag)
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Dotted paths of values.yaml, in file order, with their defaults. A documented path stops the descent (maps
/// such as `resources` are documented whole); an undocumented map is descended into.
fn value_paths(prefix: &str, value: &Value, documented: &BTreeSet<String>, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(fields) if !fields.is_empty() && !documented.contains(prefix) => {
            for (key, child) in fields {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                value_paths(&path, child, documented, out);
            }
        }
        _ => out.push((prefix.to_string(), value.clone())),
    }
}

fn values_yaml() -> Value {
    let text = std::fs::read_to_string(chart::chart_dir().join("values.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn every_helm_value_is_in_the_reference_with_its_default() {
    let rows = table(&reference(), "Helm values");
    let documented: BTreeMap<String, String> =
        rows.iter().map(|r| (code(&r[0]).unwrap_or_else(|| panic!("key cell {:?} is not `key`", r[0])).to_string(), r[1].clone())).collect();
    let keys: BTreeSet<String> = documented.keys().cloned().collect();
    let mut paths = Vec::new();
    value_paths("", &values_yaml(), &keys, &mut paths);
    let mut problems = Vec::new();
    for (path, value) in &paths {
        let json = serde_json::to_string(value).unwrap();
        match documented.get(path) {
            None => problems.push(format!("docs/reference.md lacks the Helm value {path}: add to `## Helm values`:\n| `{path}` | `{json}` | <what it does> |")),
            Some(cell) => match code(cell) {
                Some(text) if serde_json::from_str::<Value>(text).ok().as_ref() == Some(value) => {}
                None if cell == "see values.yaml" && matches!(value, Value::Object(m) if !m.is_empty()) => {}
                _ => problems.push(format!("docs/reference.md gives {path} the default {cell}; values.yaml has `{json}`")),
            },
        }
    }
    let existing: BTreeSet<&String> = paths.iter().map(|(p, _)| p).collect();
    for key in documented.keys().filter(|k| !existing.contains(k)) {
        problems.push(format!("docs/reference.md documents the Helm value {key}, which values.yaml does not have: remove its row"));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// What the chart hands the controller must be what the controller reads: every FC_* variable the chart can
/// set is a documented flag's, and with default values the chart passes the binary's own defaults.
#[test]
fn every_variable_the_chart_sets_is_a_controller_flag_with_the_same_default() {
    let flags = run_flags();
    let by_env: BTreeMap<String, (&String, &Flag)> =
        flags.iter().filter_map(|(name, flag)| Some((flag.env.clone()?, (name, flag)))).collect();
    let env_of = |objects: &[Value]| -> BTreeMap<String, String> {
        chart::find(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["value"].is_string())
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
            .collect()
    };
    let mut problems = Vec::new();
    // Everything switched on, to see every variable the templates can emit.
    let everything: Vec<String> = [
        chart::set_string("evidence.bucket", "evidence-bucket"),
        chart::set_string("evidence.presignRoleArn", "arn:aws:iam::123456789012:role/presign"),
        chart::set_string("evidence.signingKeyId", "alias/manifest"),
        chart::set_string("evidence.objectLock.mode", "GOVERNANCE"),
        chart::set("evidence.objectLock.retentionDays", "30"),
        chart::set_string("snapshotLock.mode", "governance"),
        chart::set("snapshotLock.durationDays", "30"),
        chart::set_string("avml.x86_64.uri", "s3://tools-bucket/avml"),
        chart::set_string("avml.x86_64.sha256", &"a".repeat(64)),
        chart::set_string("avml.arm64.uri", "s3://tools-bucket/avml-arm64"),
        chart::set_string("avml.arm64.sha256", &"b".repeat(64)),
        chart::set_string("controller.watchNamespace", "cases"),
        chart::set_string("controller.defaultRegion", "eu-west-1"),
        chart::set_string("evidence.region", "us-east-2"),
        chart::set_string("targetAccounts.roles.222233334444", "arn:aws:iam::222233334444:role/IR"),
        chart::set_string("targetAccounts.roles.333344445555", "arn:aws:iam::333344445555:role/IR"),
        chart::set_string("targetAccounts.externalId", "acme-ir"),
        chart::set_string("forensicCopy.accountId", "666677778888"),
        chart::set_string("forensicCopy.region", "eu-central-1"),
        chart::set_string("forensicCopy.kmsKeyId", "alias/forensic"),
        chart::set_string("forensicCopy.shareKmsKeyId", "arn:aws:kms:eu-central-1:666677778888:key/share"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let all = env_of(&chart::render("fc", "forensic-capture", &everything).unwrap());
    // The per-account roles travel as the flag's ACCOUNT=ARN list, which the controller parses.
    let roles = all.get("FC_TARGET_ROLES").map(String::as_str).unwrap_or_default();
    assert_eq!(roles, "222233334444=arn:aws:iam::222233334444:role/IR,333344445555=arn:aws:iam::333344445555:role/IR");
    for role in roles.split(',') {
        role.parse::<forensic_capture::controller::accounts_config::TargetRole>().unwrap_or_else(|e| panic!("{role}: {e}"));
    }
    assert_eq!(all.get("FC_FORENSIC_ACCOUNT_ID").map(String::as_str), Some("666677778888"), "the forensic defaults reach the controller");
    for name in all.keys().filter(|n| n.starts_with("FC_")) {
        if !by_env.contains_key(name) {
            problems.push(format!("the chart sets {name}, but no flag of `forensic-capture run` reads it"));
        }
    }
    // Defaults: installed in the controller's default namespace, the chart passes what the binary would use.
    let defaults = env_of(&chart::render("fc", "forensic-capture", &[]).unwrap());
    for (name, value) in defaults.iter().filter(|(n, _)| n.starts_with("FC_")) {
        if let Some((flag, Flag { default: Some(default), .. })) = by_env.get(name)
            && value != default
        {
            problems.push(format!("with default values the chart sets {name}={value:?}, but {flag} defaults to {default:?}: align values.yaml"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_subcommand_is_in_the_reference() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_forensic-capture")).arg("--help").output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let commands: Vec<&str> = text
        .split("Commands:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap())
        .filter(|c| *c != "help")
        .collect();
    let doc = reference();
    let missing: Vec<&&str> = commands.iter().filter(|c| !doc.contains(&format!("### `forensic-capture {c}")) ).collect();
    assert!(missing.is_empty(), "docs/reference.md lacks a `### `forensic-capture <command>`` section for {missing:?}");
}

#[test]
fn the_reasons_table_is_the_reason_enum_in_order_with_its_meanings() {
    use forensic_capture::api::Reason;
    let documented: Vec<(String, String)> = table(&reference(), "Reasons")
        .into_iter()
        .map(|row| (code(&row[0]).unwrap_or(&row[0]).to_string(), row.get(1).cloned().unwrap_or_default()))
        .collect();
    let defined: Vec<(String, String)> = Reason::ALL.iter().map(|r| (r.as_str().to_string(), r.meaning().to_string())).collect();
    for (name, meaning) in &defined {
        match documented.iter().find(|(n, _)| n == name) {
            None => panic!("docs/reference.md `## Reasons` lacks `{name}` | {meaning}"),
            Some((_, m)) => assert_eq!(m, meaning, "docs/reference.md: the meaning of `{name}`"),
        }
    }
    for (name, _) in &documented {
        assert!(defined.iter().any(|(n, _)| n == name), "docs/reference.md lists `{name}`, which the code never writes: remove it");
    }
    assert_eq!(documented, defined, "docs/reference.md `## Reasons`: same rows, in the enum's order");
}

#[test]
fn every_reason_the_readme_names_is_one_the_code_writes() {
    use forensic_capture::api::Reason;
    let readme = std::fs::read_to_string(support::repo_root().join("README.md")).unwrap();
    let start = readme.find("\n### Status\n").expect("README has a Status section");
    let section = &readme[start + 12..];
    let section = &section[..section.find("\n#").unwrap_or(section.len())];
    let named: Vec<&str> = section.split('`').skip(1).step_by(2).filter(|w| w.chars().all(|c| c.is_ascii_alphanumeric()) && w.starts_with(|c: char| c.is_ascii_uppercase())).collect();
    assert!(named.len() >= 5, "README's Status section names its reasons: {named:?}");
    let conditions = ["Acquired", "Snapshotted", "Isolated", "Ready", "Failed"];
    for name in named {
        assert!(conditions.contains(&name) || name.parse::<Reason>().is_ok(), "README names `{name}`, which is not a reason the code writes (src/api/reason.rs)");
    }
}
