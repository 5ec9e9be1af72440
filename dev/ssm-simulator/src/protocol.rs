//! The AWS JSON 1.1 wire protocol: `X-Amz-Target: AmazonSSM.<Operation>`, JSON bodies, and errors as
//! HTTP 400 with `{"__type": ..., "message": ...}` and an `x-amzn-RequestId` header.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::api::Simulator;

/// An error the real service would return, by its AWS error code.
#[derive(Debug)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
    pub status: StatusCode,
}

impl ApiError {
    pub fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), status: StatusCode::BAD_REQUEST }
    }
}

/// What every operation gets besides its body: the region the caller signed for.
pub struct Call {
    pub region: String,
    /// The caller's access key ID, from the signature's credential scope.
    pub access_key: Option<String>,
}

impl Call {
    /// Where this caller's instances are: its region, in its account.
    pub fn scope(&self) -> crate::fleet::Scope {
        crate::fleet::Scope { region: self.region.clone(), access_key: self.access_key.clone() }
    }
}

pub async fn handle(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let operation = target.strip_prefix("AmazonSSM.").unwrap_or(target).to_string();
    let call = Call { region: signed_region(&headers).unwrap_or_else(|| sim.default_region().to_string()), access_key: crate::deny::access_key(&headers) };
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error_response(&request_id, ApiError::client("SerializationException", e.to_string())),
        }
    };
    tracing::debug!(%operation, region = %call.region, "request");
    if let Err(denied) = crate::deny::check(sim.state_dir(), crate::deny::access_key(&headers).as_deref(), &operation) {
        return error_response(&request_id, ApiError::client(crate::deny::CODE, denied));
    }
    let result = match operation.as_str() {
        "SendCommand" => sim.send_command(&call, &input).await,
        "GetCommandInvocation" => sim.get_command_invocation(&input),
        "ListCommands" => sim.list_commands(&input),
        "ListCommandInvocations" => sim.list_command_invocations(&input),
        "DescribeInstanceInformation" => sim.describe_instance_information(&call, &input).await,
        "CancelCommand" => sim.cancel_command(&input),
        other => Err(ApiError::client(
            "UnknownOperationException",
            format!("operation {other:?} is not implemented by the SSM simulator"),
        )),
    };
    match result {
        Ok(output) => {
            let mut response = (StatusCode::OK, output.to_string()).into_response();
            set_common_headers(&mut response, &request_id);
            response
        }
        Err(error) => {
            tracing::debug!(%operation, code = error.code, message = %error.message, "error");
            error_response(&request_id, error)
        }
    }
}

fn error_response(request_id: &str, error: ApiError) -> Response {
    let body = json!({"__type": error.code, "message": error.message});
    let mut response = (error.status, body.to_string()).into_response();
    set_common_headers(&mut response, request_id);
    if let Ok(v) = HeaderValue::from_str(error.code) {
        response.headers_mut().insert("x-amzn-errortype", v);
    }
    response
}

fn set_common_headers(response: &mut Response, request_id: &str) {
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
}

/// The region from the SigV4 credential scope: `Credential=AKID/20260101/eu-west-1/ssm/aws4_request`.
fn signed_region(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let scope = auth.split("Credential=").nth(1)?;
    scope.split('/').nth(2).map(str::to_string)
}

/// Reads an optional string member of a request body.
pub fn opt_str<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

/// Reads a required string member, failing as the real service's input validation does.
pub fn req_str<'a>(input: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    opt_str(input, name).ok_or_else(|| {
        ApiError::client(
            "ValidationException",
            format!("1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null", lower_first(name)),
        )
    })
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_the_sigv4_credential_scope() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/eu-west-1/ssm/aws4_request, SignedHeaders=host, Signature=abc",
            ),
        );
        assert_eq!(signed_region(&headers).as_deref(), Some("eu-west-1"));
        assert_eq!(signed_region(&HeaderMap::new()), None);
    }
}
