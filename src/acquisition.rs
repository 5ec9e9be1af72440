//! Building SSM command texts and reading their results. Pure: no AWS calls here.

use std::collections::HashMap;

pub const VOLATILE_SCRIPT: &str = include_str!("../scripts/volatile.sh");
pub const MEMORY_SCRIPT: &str = include_str!("../scripts/memory.sh");
pub const CHECKPOINT_SCRIPT: &str = include_str!("../scripts/checkpoint.sh");

const MIB: u64 = 1024 * 1024;
/// S3 allows at most 10,000 parts; planning for fewer leaves room for an image larger than the instance
/// type's nominal memory (LiME headers, memory-mapped device ranges).
const PLANNED_PARTS_MAX: u64 = 9_000;
const S3_PARTS_MAX: u64 = 10_000;
const PART_SIZE_MIN: u64 = 8 * MIB;
const PART_SIZE_MAX: u64 = 5 * 1024 * MIB;

/// Multipart layout of a memory image, from the instance type's memory size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    pub part_size: u64,
    pub part_count: u64,
}

/// The image can exceed the nominal size a little; plans are for 10% more, plus a fixed margin.
fn expected_image_bytes(memory_mib: u64) -> u64 {
    memory_mib * MIB + memory_mib * MIB / 10 + 64 * MIB
}

/// Whether an image of this much memory fits the upload plan: its planned parts of at most 5 GiB each, with the
/// margin above. (About 40 TiB; no EC2 instance type has that much today, but the check costs nothing and a
/// capture that would run out of parts should say so before it starts, not after uploading 9,000 of them.)
pub fn fits_upload_plan(memory_mib: u64) -> bool {
    expected_image_bytes(memory_mib) <= PART_SIZE_MAX * PLANNED_PARTS_MAX
}

pub fn plan_parts(memory_mib: u64) -> PartPlan {
    let expected = expected_image_bytes(memory_mib);
    let part_size = expected.div_ceil(PLANNED_PARTS_MAX).div_ceil(MIB) * MIB;
    let part_size = part_size.clamp(PART_SIZE_MIN, PART_SIZE_MAX);
    let part_count = expected.div_ceil(part_size).min(S3_PARTS_MAX);
    PartPlan { part_size, part_count }
}

/// When the instance moves to the next upload plan, and when this plan's URLs stop working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRenewal {
    /// Unix time after which the script fetches the next plan before its next part.
    pub refresh_at: u64,
    /// Unix time this plan's URLs expire (with a margin for clock skew); the script gives up waiting for the
    /// next plan then.
    pub expires_at: u64,
    /// Presigned GET of the next plan, which the controller writes before `refresh_at`.
    pub next_plan_url: String,
}

/// Timing of a plan whose URLs were signed at `signed_at` (Unix time) for `ttl_seconds`: the controller writes
/// the next plan from half the lifetime on, the instance switches to it at the first part boundary after three
/// fifths, and the URLs are treated as dead a tenth of the lifetime (at most a minute) before they really
/// expire. The instance can only switch between parts, so the window from switch to death is kept wide: most
/// of the second half of the lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanTiming {
    pub renew_at: u64,
    pub refresh_at: u64,
    pub expires_at: u64,
}

pub fn plan_timing(signed_at: u64, ttl_seconds: u64) -> PlanTiming {
    PlanTiming {
        renew_at: signed_at + ttl_seconds / 2,
        refresh_at: signed_at + ttl_seconds * 3 / 5,
        expires_at: signed_at + ttl_seconds - (ttl_seconds / 10).min(60),
    }
}

/// The upload plan object fetched by the memory script: where to put the parts list, one URL per part, and
/// (for uploads that may outlive the URLs) where and when to fetch the next plan.
pub fn upload_plan(part_size: u64, parts_list_url: &str, part_urls: &[String], renewal: Option<&PlanRenewal>) -> String {
    let mut plan = format!("part-size {part_size}\nparts-url {parts_list_url}\n");
    if let Some(r) = renewal {
        plan.push_str(&format!("refresh-at {}\nexpires-at {}\nnext-plan-url {}\n", r.refresh_at, r.expires_at, r.next_plan_url));
    }
    for (i, url) in part_urls.iter().enumerate() {
        plan.push_str(&format!("part {} {url}\n", i + 1));
    }
    plan
}

#[derive(Debug, thiserror::Error)]
#[error("value of {0} cannot be passed safely in a shell command")]
pub struct UnsafeValue(pub String);

/// Command lines for AWS-RunShellScript: the script, preceded by its FC_* inputs. Values are single-quoted;
/// one containing a quote or a newline is refused rather than escaped, since none of ours can.
pub fn command_lines(script: &str, inputs: &[(&str, &str)]) -> Result<Vec<String>, UnsafeValue> {
    let mut lines = vec![
        // AWS-RunShellScript may start the script with sh; the scripts need bash.
        "if [ -z \"${BASH_VERSION:-}\" ]; then exec /bin/bash \"$0\" \"$@\"; fi".to_string(),
    ];
    for (name, value) in inputs {
        if value.contains(['\'', '\n', '\r']) {
            return Err(UnsafeValue(name.to_string()));
        }
        lines.push(format!("export {name}='{value}'"));
    }
    lines.extend(script.lines().filter(|l| !l.starts_with("#!")).map(str::to_string));
    Ok(lines)
}

/// A `FC-RESULT <name> key=value ...` line from a script's output.
pub fn result(stdout: &str, name: &str) -> Option<HashMap<String, String>> {
    stdout.lines().rev().find_map(|line| {
        let rest = line.strip_prefix("FC-RESULT ")?.strip_prefix(name)?.strip_prefix(' ')?;
        Some(rest.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
    })
}

/// A `FC-ERROR <Reason> <detail>` line: the script's own diagnosis of why it stopped.
pub fn script_error(stdout: &str) -> Option<(String, String)> {
    stdout.lines().rev().find_map(|line| {
        let rest = line.strip_prefix("FC-ERROR ")?;
        let (reason, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        Some((reason.to_string(), detail.to_string()))
    })
}

/// The stable reason for a reason word the scripts report (`FC-ERROR <Reason> ...`). The scripts name the tool
/// generically; the controller's reasons name AVML. A word outside the table is CommandFailed (the caller keeps
/// the word in the message).
pub fn script_reason(word: &str) -> crate::api::Reason {
    use crate::api::Reason;
    match word {
        "ToolChecksumMismatch" => Reason::AvmlChecksumMismatch,
        "ToolDownloadFailed" => Reason::AvmlDownloadFailed,
        other => other.parse().unwrap_or(Reason::CommandFailed),
    }
}

/// One uploaded part, as the instance reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedPart {
    pub number: i32,
    pub etag: String,
    pub size: i64,
}

/// The memory script's parts list: `part <n> <etag> <size>` lines.
pub fn parse_parts_list(text: &str) -> Option<Vec<ReportedPart>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "part").then_some(())?;
            Some(ReportedPart { number: words.next()?.parse().ok()?, etag: words.next()?.to_string(), size: words.next()?.parse().ok()? })
        })
        .collect()
}

/// Artifact object keys: `<prefix>/<caseId>/<instanceId>/<capture-uid>/<file>`.
pub fn object_key(prefix: &str, case_id: &str, instance_id: &str, capture_uid: &str, file: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{case_id}/{instance_id}/{capture_uid}/{file}")
    } else {
        format!("{prefix}/{case_id}/{instance_id}/{capture_uid}/{file}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_instances_use_the_minimum_part_size() {
        let plan = plan_parts(512);
        assert_eq!(plan.part_size, 8 * MIB);
        assert!(plan.part_count * plan.part_size >= 512 * MIB);
    }

    #[test]
    fn images_above_5_gib_fit_in_planned_parts() {
        for memory_gib in [6u64, 16, 64, 256, 768, 1536, 24 * 1024] {
            let plan = plan_parts(memory_gib * 1024);
            assert!(plan.part_count <= S3_PARTS_MAX, "{memory_gib} GiB");
            assert!(plan.part_size >= 5 * MIB && plan.part_size <= PART_SIZE_MAX, "{memory_gib} GiB");
            assert!(plan.part_count * plan.part_size >= memory_gib * 1024 * MIB, "{memory_gib} GiB image fits");
            assert_eq!(plan.part_size % MIB, 0);
        }
    }

    #[test]
    fn command_lines_export_inputs_before_the_script() {
        let lines = command_lines("#!/bin/bash\necho $FC_X\n", &[("FC_X", "https://h/k?a=1&b=2")]).unwrap();
        assert_eq!(lines[1], "export FC_X='https://h/k?a=1&b=2'");
        assert_eq!(lines.last().unwrap(), "echo $FC_X");
        assert!(!lines.iter().any(|l| l.starts_with("#!")));
    }

    #[test]
    fn values_that_could_break_out_of_quotes_are_refused() {
        assert!(command_lines("true", &[("FC_X", "a'; rm -rf /; '")]).is_err());
        assert!(command_lines("true", &[("FC_X", "a\nb")]).is_err());
    }

    #[test]
    fn results_and_errors_are_read_from_script_output() {
        let out = "noise\nFC-RESULT memory sha256=abc bytes=12 parts=2\n";
        let r = result(out, "memory").unwrap();
        assert_eq!((r["sha256"].as_str(), r["bytes"].as_str(), r["parts"].as_str()), ("abc", "12", "2"));
        assert!(result(out, "volatile").is_none());
        assert_eq!(
            script_error("x\nFC-ERROR ToolChecksumMismatch AVML SHA-256 is 1, expected 2\n"),
            Some(("ToolChecksumMismatch".into(), "AVML SHA-256 is 1, expected 2".into()))
        );
    }

    #[test]
    fn object_keys_follow_the_documented_layout() {
        assert_eq!(object_key("evidence/", "INC-1", "i-1", "u", "memory.lime"), "evidence/INC-1/i-1/u/memory.lime");
        assert_eq!(object_key("", "INC-1", "i-1", "u", "manifest.json"), "INC-1/i-1/u/manifest.json");
    }

    #[test]
    fn upload_plan_lists_numbered_parts() {
        assert_eq!(upload_plan(8, "p", &["u1".into(), "u2".into()], None), "part-size 8\nparts-url p\npart 1 u1\npart 2 u2\n");
        let renewal = PlanRenewal { refresh_at: 1_750, expires_at: 1_940, next_plan_url: "n".into() };
        assert_eq!(
            upload_plan(8, "p", &["u1".into()], Some(&renewal)),
            "part-size 8\nparts-url p\nrefresh-at 1750\nexpires-at 1940\nnext-plan-url n\npart 1 u1\n"
        );
    }

    #[test]
    fn plans_are_renewed_at_half_life_switched_from_three_fifths_and_dead_before_expiry() {
        assert_eq!(plan_timing(1_000, 3_600), PlanTiming { renew_at: 2_800, refresh_at: 3_160, expires_at: 4_540 });
        // Short lifetimes keep a proportional margin.
        assert_eq!(plan_timing(1_000, 40), PlanTiming { renew_at: 1_020, refresh_at: 1_024, expires_at: 1_036 });
        let t = plan_timing(0, 900);
        assert!(t.renew_at < t.refresh_at && t.refresh_at < t.expires_at && t.expires_at < 900);
    }

    #[test]
    fn parts_list_is_parsed_and_garbage_refused() {
        let parts = parse_parts_list("part 1 \"abc\" 8388608\npart 2 \"def\" 12\n").unwrap();
        assert_eq!(parts[1], ReportedPart { number: 2, etag: "\"def\"".into(), size: 12 });
        assert!(parse_parts_list("part x y z\n").is_none());
    }
}
