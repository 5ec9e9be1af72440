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

/// What kind of trouble an AWS error is. This is the one rule for which errors are transient; what each class
/// means for a step is decided in one place too (`controller::failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, connection failures, and credentials that expired or were signed with a
    /// skewed clock (the SDK refreshes credentials and corrects skew on its own, so a later attempt succeeds):
    /// retried with backoff; the capture continues.
    Retryable,
    /// The caller lacks permission.
    AccessDenied,
    /// The instance itself does not exist (any more).
    InstanceNotFound,
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
];

/// Server-side trouble that clears on its own.
const SERVER_TROUBLE: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
    // Our own code for an object EC2 said exists (a duplicate name) that its lookup does not show yet.
    "NotYetVisible",
];

/// Credentials that stopped being valid between signing and checking, or a request signed with a clock the
/// service finds skewed. Both clear on their own: the credential provider refreshes before expiry (a refresh
/// racing a request yields one ExpiredToken), and the SDK corrects its clock offset from the service's answer.
/// Ending a capture on them would end it on a hiccup; a persistent one shows as RetryingAfterError.
const EXPIRED_OR_SKEWED: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "RequestTimeTooSkewed",
    "RequestInTheFuture",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
];

const ACCESS_DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedAccess",
    "AuthFailure",
    "InvalidClientTokenId",
];

impl AwsError {
    pub fn class(&self) -> ErrorClass {
        let code = self.code.as_str();
        if THROTTLING.contains(&code) || SERVER_TROUBLE.contains(&code) || EXPIRED_OR_SKEWED.contains(&code) || code == "Transport" || self.http_status.is_some_and(|s| s >= 500) {
            ErrorClass::Retryable
        } else if code.starts_with("InvalidInstanceID") {
            ErrorClass::InstanceNotFound
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

    /// The service asked the caller to slow down.
    pub fn is_throttling(&self) -> bool {
        THROTTLING.contains(&self.code.as_str())
    }

    /// The service answered with a refusal (a 4xx, or throttling, which EC2 and S3 send as 503), which AWS
    /// decides before acting: the call did nothing. After another 5xx or a transport error (a response cut
    /// short, a timeout) it may have acted.
    pub fn refused_before_acting(&self) -> bool {
        let answered = self.code != "Transport" && self.http_status.is_some();
        answered && (self.is_throttling() || self.http_status.is_some_and(|s| (400..500).contains(&s)))
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
    fn only_refusals_are_known_to_have_done_nothing() {
        assert!(error("RequestLimitExceeded", Some(503)).refused_before_acting(), "EC2 throttles with 503");
        assert!(error("SlowDown", Some(503)).refused_before_acting());
        assert!(error("ThrottlingException", Some(400)).refused_before_acting());
        assert!(error("InvalidParameterValue", Some(400)).refused_before_acting());
        assert!(!error("InternalError", Some(500)).refused_before_acting(), "a 500 may come after the work was done");
        assert!(!error("Unavailable", Some(503)).refused_before_acting());
        // A response cut short carries the status line that did arrive.
        assert!(!error("Transport", Some(200)).refused_before_acting());
        assert!(!error("Transport", None).refused_before_acting());
    }

    #[test]
    fn permission_errors_are_access_denied() {
        assert_eq!(error("UnauthorizedOperation", Some(403)).class(), ErrorClass::AccessDenied);
        assert_eq!(error("AccessDenied", Some(403)).class(), ErrorClass::AccessDenied);
    }

    #[test]
    fn expired_credentials_and_clock_skew_are_retryable_not_access_denied() {
        for code in ["ExpiredToken", "ExpiredTokenException", "RequestExpired", "RequestTimeTooSkewed", "SignatureDoesNotMatch"] {
            assert_eq!(error(code, Some(403)).class(), ErrorClass::Retryable, "{code}");
        }
        assert_eq!(error("InvalidClientTokenId", Some(403)).class(), ErrorClass::AccessDenied, "an unknown key ID does not heal");
    }

    #[test]
    fn timeouts_and_connection_errors_are_retryable() {
        assert_eq!(error("RequestTimeout", Some(400)).class(), ErrorClass::Retryable);
        assert_eq!(error("ServiceUnavailable", Some(503)).class(), ErrorClass::Retryable);
    }

    #[test]
    fn missing_things_are_not_found_and_a_missing_instance_is_its_own_class() {
        assert_eq!(error("InvalidInstanceID.NotFound", Some(400)).class(), ErrorClass::InstanceNotFound);
        assert_eq!(error("InvalidInstanceID.Malformed", Some(400)).class(), ErrorClass::InstanceNotFound);
        assert_eq!(error("NoSuchBucket", Some(404)).class(), ErrorClass::NotFound);
        assert_eq!(error("InvalidGroup.Duplicate", Some(400)).class(), ErrorClass::Rejected);
    }

    #[test]
    fn display_names_operation_code_and_request_id() {
        assert_eq!(error("AccessDenied", Some(403)).to_string(), "ec2:Test: AccessDenied: m (request ID r-1)");
    }
}
