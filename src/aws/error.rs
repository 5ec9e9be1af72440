//! AWS errors that keep what a responder needs: the operation, the AWS error code, the request ID.

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {code}: {message}{}", request_id.as_deref().map(|r| format!(" (request ID {r})")).unwrap_or_default())]
pub struct AwsError {
    /// The API operation, for example `ec2:CreateSnapshots`.
    pub operation: &'static str,
    /// The AWS error code (`AccessDenied`, `InvalidInstanceID.NotFound`, ...), or a transport category.
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    /// HTTP status when a response came back.
    pub http_status: Option<u16>,
}

/// How the controller should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, connection failures: retry with backoff; the capture continues.
    Retryable,
    /// The caller lacks permission: the capture ends Failed with no further side effects.
    AccessDenied,
    /// The named thing does not exist.
    NotFound,
    /// Anything else the service rejected.
    Rejected,
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestThrottled",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

const ACCESS_DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedAccess",
    "AuthFailure",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
];

impl AwsError {
    pub fn class(&self) -> ErrorClass {
        if THROTTLING.contains(&self.code.as_str()) || self.code == "Transport" || self.http_status.is_some_and(|s| s >= 500) {
            ErrorClass::Retryable
        } else if ACCESS_DENIED.contains(&self.code.as_str()) || self.http_status == Some(403) {
            ErrorClass::AccessDenied
        } else if self.code.contains("NotFound") || self.code.starts_with("NoSuch") || self.http_status == Some(404) {
            ErrorClass::NotFound
        } else {
            ErrorClass::Rejected
        }
    }

    /// An error that arose on our side of the call (transport, or a response missing what it must carry).
    pub fn local(operation: &'static str, code: &str, message: impl Into<String>) -> Self {
        AwsError { operation, code: code.into(), message: message.into(), request_id: None, http_status: None }
    }

    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// Builds an error from an SDK error, keeping the service's code and request ID.
    pub fn from_sdk<E>(operation: &'static str, error: aws_sdk_s3::error::SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        use aws_sdk_s3::error::SdkError;
        let http_status = error.raw_response().map(|r| r.status().as_u16());
        match &error {
            SdkError::ServiceError(service) => {
                let err = service.err();
                AwsError {
                    operation,
                    code: err.code().map(str::to_string).unwrap_or_else(|| match http_status {
                        Some(404) => "NotFound".into(),
                        Some(403) => "AccessDenied".into(),
                        Some(s) => format!("Http{s}"),
                        None => "Unknown".into(),
                    }),
                    message: err.message().map(str::to_string).unwrap_or_else(|| format!("{err}")),
                    request_id: err.meta().extra("aws_request_id").map(str::to_string),
                    http_status,
                }
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => AwsError {
                operation,
                code: "Transport".into(),
                message: format!("{}", aws_smithy_types::error::display::DisplayErrorContext(&error)),
                request_id: None,
                http_status,
            },
            _ => AwsError {
                operation,
                code: "ClientError".into(),
                message: format!("{}", aws_smithy_types::error::display::DisplayErrorContext(&error)),
                request_id: None,
                http_status,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, http: Option<u16>) -> AwsError {
        AwsError { operation: "ec2:Test", code: code.into(), message: "m".into(), request_id: Some("r-1".into()), http_status: http }
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        assert_eq!(error("RequestLimitExceeded", Some(503)).class(), ErrorClass::Retryable);
        assert_eq!(error("Whatever", Some(500)).class(), ErrorClass::Retryable);
        assert_eq!(error("Transport", None).class(), ErrorClass::Retryable);
    }

    #[test]
    fn permission_errors_are_access_denied() {
        assert_eq!(error("UnauthorizedOperation", Some(403)).class(), ErrorClass::AccessDenied);
        assert_eq!(error("AccessDenied", Some(403)).class(), ErrorClass::AccessDenied);
    }

    #[test]
    fn missing_things_are_not_found() {
        assert_eq!(error("InvalidInstanceID.NotFound", Some(400)).class(), ErrorClass::NotFound);
        assert_eq!(error("NoSuchBucket", Some(404)).class(), ErrorClass::NotFound);
    }

    #[test]
    fn display_names_operation_code_and_request_id() {
        assert_eq!(error("AccessDenied", Some(403)).to_string(), "ec2:Test: AccessDenied: m (request ID r-1)");
    }
}
