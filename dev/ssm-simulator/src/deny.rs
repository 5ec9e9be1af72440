//! Denials on request, for tests of how callers handle a refused permission: in the state directory,
//! `access-denied/<access key ID>` lists operations (one per line) denied to callers signing with that key
//! (`access-denied/any`: to everyone). Such a request is answered as SSM answers a caller whose IAM policy
//! lacks the action: HTTP 400, `AccessDeniedException`, "User: ... is not authorized to perform:
//! ssm:<Operation> ...". Read on each request, so a test can deny and allow without restarting the simulator;
//! one file per key, so tests sharing the simulator neither see nor overwrite each other's denials.

use std::path::Path;

use axum::http::HeaderMap;

pub const DIR: &str = "access-denied";

/// The access key ID from the SigV4 credential scope: `Credential=AKID/20260101/eu-west-1/ssm/aws4_request`.
pub fn access_key(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let scope = auth.split("Credential=").nth(1)?;
    scope.split('/').next().map(str::to_string)
}

/// The error code SSM gives a caller lacking a permission.
pub const CODE: &str = "AccessDeniedException";

/// The denial message for `operation` by `key`, when the state directory lists one.
pub fn check(state_dir: &Path, key: Option<&str>, operation: &str) -> Result<(), String> {
    let dir = state_dir.join(DIR);
    // Access key IDs are letters and digits; anything else cannot name a file here.
    let own = key.filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()));
    let denied = own.into_iter().chain(["any"]).any(|name| {
        std::fs::read_to_string(dir.join(name)).is_ok_and(|listed| listed.lines().any(|l| l.trim() == operation))
    });
    if !denied {
        return Ok(());
    }
    let user = key.unwrap_or("anonymous");
    Err(format!(
        "User: arn:aws:iam::123456789012:user/{user} is not authorized to perform: ssm:{operation} on resource: arn:aws:ssm:*:123456789012:* because no identity-based policy allows the ssm:{operation} action"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_listed_key_and_operation_is_denied_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("ssm-deny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(check(&dir, Some("AKIA1"), "SendCommand").is_ok(), "no file: nothing denied");
        std::fs::create_dir_all(dir.join(DIR)).unwrap();
        std::fs::write(dir.join(DIR).join("AKIA1"), "DescribeInstanceInformation\n").unwrap();
        std::fs::write(dir.join(DIR).join("any"), "CancelCommand\n").unwrap();
        let denied = check(&dir, Some("AKIA1"), "DescribeInstanceInformation").unwrap_err();
        assert!(denied.contains("not authorized to perform: ssm:DescribeInstanceInformation"), "{denied}");
        assert!(check(&dir, Some("AKIA2"), "DescribeInstanceInformation").is_ok(), "another key");
        assert!(check(&dir, Some("AKIA1"), "SendCommand").is_ok(), "another operation");
        assert!(check(&dir, Some("AKIA2"), "CancelCommand").is_err(), "any is every key");
        assert!(check(&dir, Some("../AKIA1"), "DescribeInstanceInformation").is_ok(), "no path outside the directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_access_key_comes_from_the_credential_scope() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/eu-west-1/ssm/aws4_request, Signature=abc"));
        assert_eq!(access_key(&headers).as_deref(), Some("AKIDEXAMPLE"));
    }
}
