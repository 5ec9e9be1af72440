//! Which AWS service and operation a request is, and each service's own error responses.
//!
//! The service is the signing name in the SigV4 credential scope (the Authorization header, or the
//! X-Amz-Credential parameter of a presigned URL). The operation comes from where each protocol carries it:
//! the X-Amz-Target header (JSON protocol: SSM, KMS), the Action parameter (query protocol: EC2, STS, IAM,
//! Auto Scaling, Elastic Load Balancing), or the method, path and sub-resource (S3's REST protocol).

use axum::http::{HeaderMap, Method, StatusCode};

use crate::plan::Fault;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// EC2's own query dialect: `<Response><Errors><Error>`.
    Ec2,
    /// S3's REST-XML: `<Error>` at the root.
    S3,
    /// awsJson 1.0/1.1: `{"__type": ...}`.
    Json,
    /// The query protocol of STS, IAM, Auto Scaling and ELB: `<ErrorResponse><Error>`.
    Query,
}

impl Protocol {
    pub fn of(service: &str, headers: &HeaderMap) -> Protocol {
        match service {
            "ec2" => Protocol::Ec2,
            "s3" => Protocol::S3,
            _ if headers.contains_key("x-amz-target") => Protocol::Json,
            "ssm" | "kms" => Protocol::Json,
            _ => Protocol::Query,
        }
    }

    /// Whether the operation is named in the body (so the body is read before deciding).
    pub fn operation_in_body(self) -> bool {
        matches!(self, Protocol::Ec2 | Protocol::Query)
    }
}

/// The signing name of the service a request is for; `unsigned` when it carries no SigV4 scope.
pub fn service(headers: &HeaderMap, query: &str) -> String {
    let from_header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once("Credential=").map(|(_, rest)| rest.split([',', ' ']).next().unwrap_or("").to_string()));
    let from_query = || parameter(query, "X-Amz-Credential");
    from_header
        .or_else(from_query)
        // AKID/date/region/service/aws4_request
        .and_then(|scope| scope.split('/').nth(3).map(str::to_string))
        .unwrap_or_else(|| "unsigned".into())
}

/// The operation of a request to `service` in `protocol`; `body` is the form body of query-protocol requests.
pub fn operation(protocol: Protocol, method: &Method, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) -> String {
    match protocol {
        Protocol::Json => headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("Unknown")
            .to_string(),
        Protocol::Ec2 | Protocol::Query => parameter(std::str::from_utf8(body).unwrap_or(""), "Action")
            .or_else(|| parameter(query, "Action"))
            .unwrap_or_else(|| "Unknown".into()),
        Protocol::S3 => s3_operation(method, path, query, headers).to_string(),
    }
}

fn s3_operation(method: &Method, path: &str, query: &str, headers: &HeaderMap) -> &'static str {
    let has = |name: &str| query.split('&').any(|p| p == name || p.starts_with(&format!("{name}=")));
    let object = path.trim_start_matches('/').split_once('/').is_some_and(|(_, key)| !key.is_empty());
    match (method.as_str(), object) {
        ("PUT", true) if has("partNumber") && has("uploadId") => "UploadPart",
        ("PUT", true) if headers.contains_key("x-amz-copy-source") => "CopyObject",
        ("PUT", true) if has("retention") => "PutObjectRetention",
        ("PUT", true) if has("legal-hold") => "PutObjectLegalHold",
        ("PUT", true) if has("tagging") => "PutObjectTagging",
        ("PUT", true) => "PutObject",
        ("PUT", false) if has("object-lock") => "PutObjectLockConfiguration",
        ("PUT", false) if query.is_empty() => "CreateBucket",
        ("PUT", false) => "PutBucketConfiguration",
        ("POST", true) if has("uploads") => "CreateMultipartUpload",
        ("POST", true) if has("uploadId") => "CompleteMultipartUpload",
        ("POST", false) if has("delete") => "DeleteObjects",
        ("DELETE", true) if has("uploadId") => "AbortMultipartUpload",
        ("DELETE", true) => "DeleteObject",
        ("DELETE", false) => "DeleteBucket",
        ("GET", true) if has("uploadId") => "ListParts",
        ("GET", true) if has("retention") => "GetObjectRetention",
        ("GET", true) if has("legal-hold") => "GetObjectLegalHold",
        ("GET", true) if has("tagging") => "GetObjectTagging",
        ("GET", true) if has("attributes") => "GetObjectAttributes",
        ("GET", true) => "GetObject",
        ("GET", false) if has("uploads") => "ListMultipartUploads",
        ("GET", false) if has("versions") => "ListObjectVersions",
        ("GET", false) if has("object-lock") => "GetObjectLockConfiguration",
        ("GET", false) if has("location") => "GetBucketLocation",
        ("GET", false) if has("list-type") => "ListObjectsV2",
        ("GET", false) => "ListObjects",
        ("HEAD", true) => "HeadObject",
        ("HEAD", false) => "HeadBucket",
        _ => "Unknown",
    }
}

/// A parameter of a URL query or form body, percent-decoded.
pub fn parameter(encoded: &str, name: &str) -> Option<String> {
    encoded.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error response as `service` answers in `protocol`: (status, content type, body).
pub fn error_response(protocol: Protocol, fault: Fault, request_id: &str) -> (StatusCode, &'static str, String) {
    let (status, code, message) = match (protocol, fault) {
        (Protocol::Ec2, Fault::Throttle) => (503, "RequestLimitExceeded", "Request limit exceeded."),
        (Protocol::Ec2, Fault::Internal) => (500, "InternalError", "An internal error has occurred."),
        (Protocol::Ec2, _) => (503, "Unavailable", "The server is overloaded and can't handle the request."),
        (Protocol::S3, Fault::Throttle) => (503, "SlowDown", "Please reduce your request rate."),
        (Protocol::S3, Fault::Internal) => (500, "InternalError", "We encountered an internal error. Please try again."),
        (Protocol::S3, _) => (503, "ServiceUnavailable", "Service is unable to handle request."),
        (Protocol::Json, Fault::Throttle) => (400, "ThrottlingException", "Rate exceeded"),
        (Protocol::Json, Fault::Internal) => (500, "InternalServerError", "An internal error occurred."),
        (Protocol::Json, _) => (503, "ServiceUnavailable", "Service unavailable."),
        (Protocol::Query, Fault::Throttle) => (400, "Throttling", "Rate exceeded"),
        (Protocol::Query, Fault::Internal) => (500, "InternalFailure", "The request processing has failed because of an unknown error."),
        (Protocol::Query, _) => (503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
    };
    let status = StatusCode::from_u16(status).expect("a valid status");
    let body = match protocol {
        Protocol::Ec2 => format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"#
        ),
        Protocol::S3 => format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId><HostId>fault-proxy</HostId></Error>"#
        ),
        Protocol::Json => serde_json::json!({"__type": code, "message": message}).to_string(),
        Protocol::Query => {
            let kind = if status.is_server_error() { "Receiver" } else { "Sender" };
            format!(
                r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"#
            )
        }
    };
    let content_type = match protocol {
        Protocol::Json => "application/x-amz-json-1.1",
        _ => "text/xml",
    };
    (status, content_type, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_service_comes_from_the_credential_scope_of_a_header_or_a_presigned_url() {
        let signed = headers(&[("authorization", "AWS4-HMAC-SHA256 Credential=AKIA/20261202/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=ab")]);
        assert_eq!(service(&signed, ""), "ec2");
        assert_eq!(service(&HeaderMap::new(), "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIA%2F20261202%2Feu-west-1%2Fs3%2Faws4_request&partNumber=2"), "s3");
        assert_eq!(service(&HeaderMap::new(), ""), "unsigned");
    }

    #[test]
    fn operations_are_read_where_each_protocol_carries_them() {
        let json = headers(&[("x-amz-target", "AmazonSSM.SendCommand")]);
        assert_eq!(operation(Protocol::Json, &Method::POST, "/", "", &json, b"{}"), "SendCommand");
        assert_eq!(operation(Protocol::Ec2, &Method::POST, "/", "", &HeaderMap::new(), b"Action=CreateSnapshots&Version=2016-11-15"), "CreateSnapshots");
        let none = HeaderMap::new();
        let s3 = |m: Method, p: &str, q: &str| operation(Protocol::S3, &m, p, q, &none, b"");
        assert_eq!(s3(Method::PUT, "/b/k", "partNumber=3&uploadId=x&X-Amz-Signature=y"), "UploadPart");
        assert_eq!(s3(Method::PUT, "/b/k", ""), "PutObject");
        assert_eq!(s3(Method::POST, "/b/k", "uploads"), "CreateMultipartUpload");
        assert_eq!(s3(Method::POST, "/b/k", "uploadId=x"), "CompleteMultipartUpload");
        assert_eq!(s3(Method::GET, "/b", "list-type=2&prefix=a"), "ListObjectsV2");
        assert_eq!(s3(Method::GET, "/b/k", ""), "GetObject");
        assert_eq!(s3(Method::HEAD, "/b/k", ""), "HeadObject");
        assert_eq!(s3(Method::PUT, "/b", ""), "CreateBucket");
    }

    #[test]
    fn percent_decoding_handles_escapes_plus_and_a_trailing_percent() {
        assert_eq!(parameter("a=x%2Fy+z&b=1", "a").as_deref(), Some("x/y z"));
        assert_eq!(parameter("a=50%", "a").as_deref(), Some("50%"));
    }

    #[test]
    fn throttling_is_answered_with_each_protocols_own_code_and_status() {
        for (protocol, status, code) in [
            (Protocol::Ec2, 503, "RequestLimitExceeded"),
            (Protocol::S3, 503, "SlowDown"),
            (Protocol::Json, 400, "ThrottlingException"),
            (Protocol::Query, 400, "Throttling"),
        ] {
            let (got, _, body) = error_response(protocol, Fault::Throttle, "r-1");
            assert_eq!(got.as_u16(), status, "{protocol:?}");
            assert!(body.contains(code), "{protocol:?}: {body}");
        }
    }
}
