//! Sessions in workload accounts: the controller lives in a security account and reaches an instance in
//! another account by assuming a role there. Each session is named after the capture and carries who asked
//! (`SourceIdentity`) and the capture's UID and case as session tags, so the workload account's CloudTrail
//! says who did what and why. The names and tags are made here, pure; `assume` is the one STS call.

use std::time::{Duration, SystemTime};

use aws_sdk_sts::types::Tag;

use super::AwsError;

/// Tag keys on every target-account session.
pub const CAPTURE_UID_TAG: &str = "forensic-capture:capture-uid";
pub const CASE_ID_TAG: &str = "forensic-capture:case-id";

/// What a target-account session is asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionRequest {
    pub role_arn: String,
    pub external_id: Option<String>,
    pub session_name: String,
    pub source_identity: String,
    pub tags: Vec<(String, String)>,
    pub lifetime_seconds: u32,
}

impl SessionRequest {
    /// A session for the capture with `uid` in `case_id`, asked for by `requester`.
    pub fn for_capture(role_arn: String, external_id: Option<String>, uid: &str, case_id: &str, requester: &str, lifetime_seconds: u32) -> Self {
        SessionRequest {
            role_arn,
            external_id,
            session_name: session_name(uid),
            source_identity: source_identity(requester),
            tags: vec![(CAPTURE_UID_TAG.into(), tag_value(uid)), (CASE_ID_TAG.into(), tag_value(case_id))],
            lifetime_seconds,
        }
    }
}

/// `forensic-capture-<uid>`: unique per capture, within STS's 64 characters of `[\w+=,.@-]`.
pub fn session_name(uid: &str) -> String {
    clip(&format!("forensic-capture-{}", keep(uid, |c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))), 64)
}

/// STS's SourceIdentity: 2 to 64 characters of `[\w+=,.@-]`, not starting with `aws:`. Other characters
/// become `-` (so `system:serviceaccount:ns:sa` stays readable as `system-serviceaccount-ns-sa`).
pub fn source_identity(requester: &str) -> String {
    let kept = keep(requester.trim(), |c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    let kept = if kept.to_ascii_lowercase().starts_with("aws") { format!("fc-{kept}") } else { kept };
    match clip(&kept, 64) {
        s if s.len() >= 2 => s,
        _ => "forensic-capture".into(),
    }
}

/// Session tag values: up to 256 characters of letters, digits, spaces and `_.:/=+-@`.
fn tag_value(value: &str) -> String {
    clip(&keep(value, |c| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c)), 256)
}

fn keep(value: &str, allowed: impl Fn(char) -> bool) -> String {
    value.chars().map(|c| if allowed(c) { c } else { '-' }).collect()
}

fn clip(value: &str, max: usize) -> String {
    value.chars().take(max).collect()
}

/// Whether a session that ends at `expires` should be replaced now: when less than a quarter of its
/// lifetime is left (at least a minute), so that no call is signed with credentials about to expire and a
/// capture that outlives one session goes on with the next.
pub fn refresh_due(expires: SystemTime, now: SystemTime, lifetime: Duration) -> bool {
    let margin = (lifetime / 4).max(Duration::from_secs(60));
    expires.duration_since(now).map_or(true, |left| left < margin)
}

/// Temporary credentials of a session, and when they end.
#[derive(Debug, Clone)]
pub struct Session {
    pub credentials: aws_sdk_s3::config::Credentials,
    pub expires: SystemTime,
}

/// Assumes the role for one session.
pub async fn assume(sts: &aws_sdk_sts::Client, request: &SessionRequest) -> Result<Session, AwsError> {
    let tags: Vec<Tag> = request
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build().expect("key and value are set"))
        .collect();
    let assumed = sts
        .assume_role()
        .role_arn(&request.role_arn)
        .role_session_name(&request.session_name)
        .source_identity(&request.source_identity)
        .set_tags(Some(tags))
        .set_external_id(request.external_id.clone())
        .duration_seconds(request.lifetime_seconds as i32)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sts:AssumeRole", e))?;
    let c = assumed.credentials().ok_or_else(|| AwsError::local("sts:AssumeRole", "MissingCredentials", "the response carried no credentials"))?;
    let expires = SystemTime::try_from(*c.expiration()).unwrap_or_else(|_| SystemTime::now() + Duration::from_secs(request.lifetime_seconds.into()));
    let credentials = aws_sdk_s3::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        Some(expires),
        "forensic-capture-target-account",
    );
    Ok(Session { credentials, expires })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_named_after_the_capture_uid() {
        let uid = "0b6f3c1e-8d2a-4c7e-9f10-2a3b4c5d6e7f";
        assert_eq!(session_name(uid), format!("forensic-capture-{uid}"));
        assert!(session_name(uid).len() <= 64);
        assert!(session_name(&"x".repeat(100)).len() == 64);
    }

    #[test]
    fn source_identity_keeps_stss_characters_and_length() {
        assert_eq!(source_identity("alice@example.com"), "alice@example.com");
        assert_eq!(source_identity("system:serviceaccount:argocd:argocd-application-controller"), "system-serviceaccount-argocd-argocd-application-controller");
        assert_eq!(source_identity("Alice Smith"), "Alice-Smith");
        assert_eq!(source_identity(&"a".repeat(80)).len(), 64);
        assert_eq!(source_identity("aws:internal"), "fc-aws-internal", "STS refuses identities starting with aws:");
        assert_eq!(source_identity(""), "forensic-capture");
        assert_eq!(source_identity("x"), "forensic-capture", "shorter than STS's minimum of 2");
    }

    #[test]
    fn tags_carry_the_uid_and_case() {
        let request = SessionRequest::for_capture("arn:aws:iam::111111111111:role/R".into(), None, "u-1", "IR-2026/42 (worm)", "alice", 3600);
        assert_eq!(request.tags, vec![(CAPTURE_UID_TAG.into(), "u-1".into()), (CASE_ID_TAG.into(), "IR-2026/42 -worm-".into())]);
        assert_eq!(request.session_name, "forensic-capture-u-1");
        assert_eq!(request.source_identity, "alice");
    }

    #[test]
    fn a_session_is_replaced_in_the_last_quarter_of_its_lifetime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert!(!refresh_due(now + Duration::from_secs(3000), now, hour));
        assert!(!refresh_due(now + Duration::from_secs(901), now, hour));
        assert!(refresh_due(now + Duration::from_secs(899), now, hour));
        assert!(refresh_due(now - Duration::from_secs(1), now, hour), "an expired session is replaced");
        // Short sessions keep a minute's margin.
        assert!(refresh_due(now + Duration::from_secs(59), now, Duration::from_secs(120)));
        assert!(!refresh_due(now + Duration::from_secs(61), now, Duration::from_secs(120)));
    }
}
