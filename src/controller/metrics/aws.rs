//! Counts and times every AWS call, whichever adapter makes it: an SDK interceptor added to each service
//! client's configuration (Context::aws). One execution is one call, SDK retries included.

use std::{
    fmt::{self, Write},
    sync::Arc,
    time::Instant,
};

use aws_sdk_s3::config::{
    ConfigBag, Intercept, RuntimeComponents,
    interceptors::{BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef},
};
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use super::Metrics;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub struct AwsCallObserver {
    /// The IAM service prefix (`ec2`, `ssm`, ...), so operations read as in IAM policies and `AwsError`.
    service: &'static str,
    metrics: Arc<Metrics>,
}

/// Kept in the call's own config bag from the first hook to the last.
#[derive(Debug, Clone)]
struct CallStarted {
    operation: String,
    at: Instant,
}

impl Storable for CallStarted {
    type Storer = StoreReplace<Self>;
}

impl AwsCallObserver {
    pub(super) fn new(service: &'static str, metrics: Arc<Metrics>) -> Self {
        AwsCallObserver { service, metrics }
    }
}

impl Intercept for AwsCallObserver {
    fn name(&self) -> &'static str {
        "forensic-capture-metrics"
    }

    fn read_before_execution(&self, context: &BeforeSerializationInterceptorContextRef<'_>, cfg: &mut ConfigBag) -> Result<(), BoxError> {
        let operation = format!("{}:{}", self.service, operation_name(context.input()).as_deref().unwrap_or("Unknown"));
        cfg.interceptor_state().store_put(CallStarted { operation, at: Instant::now() });
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(started) = cfg.load::<CallStarted>() else { return Ok(()) };
        let outcome = match (context.output_or_error(), context.response()) {
            // Presigning runs the same pipeline but stops before sending: not a call to AWS.
            (None, _) => return Ok(()),
            (Some(Ok(_)), _) => "success",
            (Some(Err(_)), Some(response)) if response.status().is_server_error() => "server_error",
            (Some(Err(_)), Some(_)) => "client_error",
            (Some(Err(_)), None) => "transport_error",
        };
        self.metrics.aws_call(started.operation.clone(), outcome, started.at.elapsed().as_secs_f64());
        Ok(())
    }
}

/// The operation's name, from its input's type name.
///
/// The SDK keeps the name in the config bag as `aws_smithy_runtime_api::client::orchestrator::Metadata`, a
/// type none of our dependencies re-export (and we add no crates). Every generated input type is named
/// `<Operation>Input`, and the type-erased input's Debug output (`Input(TypeErasedBox[Clone]:SendCommandInput
/// {...`) shows it after a fixed prefix, so the name is read from there. Formatting stops after a few dozen bytes: an upload's body is never rendered. A unit test pins
/// the format against the SDK in use.
fn operation_name(input: &impl fmt::Debug) -> Option<String> {
    let mut head = Head(String::with_capacity(HEAD_BYTES));
    let _ = write!(head, "{input:?}");
    let after_prefix = head.0.split_once("]:")?.1;
    let type_name: String = after_prefix.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    type_name.strip_suffix("Input").filter(|n| !n.is_empty()).map(str::to_string)
}

const HEAD_BYTES: usize = 96;

/// A writer that accepts the first HEAD_BYTES bytes, then fails, which stops the formatting.
struct Head(String);

impl Write for Head {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = HEAD_BYTES.saturating_sub(self.0.len());
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push_str(&s[..end]);
        Err(fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_smithy_types::type_erasure::TypeErasedBox;

    use super::*;

    #[test]
    fn operation_names_come_from_the_sdk_input_types() {
        let send = aws_sdk_ssm::operation::send_command::SendCommandInput::builder().document_name("AWS-RunShellScript").build().unwrap();
        assert_eq!(operation_name(&TypeErasedBox::new(send)), Some("SendCommand".into()));
        let snapshots = aws_sdk_ec2::operation::create_snapshots::CreateSnapshotsInput::builder().build().unwrap();
        assert_eq!(operation_name(&TypeErasedBox::new_with_clone(snapshots)), Some("CreateSnapshots".into()));
        let identity = aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityInput::builder().build().unwrap();
        assert_eq!(operation_name(&TypeErasedBox::new(identity)), Some("GetCallerIdentity".into()));
    }

    #[test]
    fn a_large_upload_body_is_not_rendered_to_find_the_name() {
        let body = ByteStream::from(vec![b'x'; 64 * 1024 * 1024]);
        let upload = aws_sdk_s3::operation::upload_part::UploadPartInput::builder().bucket("b").key("k").body(body).build().unwrap();
        let started = Instant::now();
        assert_eq!(operation_name(&TypeErasedBox::new(upload)), Some("UploadPart".into()));
        assert!(started.elapsed() < std::time::Duration::from_millis(50), "{:?}", started.elapsed());
    }

    #[test]
    fn something_that_is_not_an_input_has_no_name() {
        assert_eq!(operation_name(&TypeErasedBox::new(42u8)), None);
        assert_eq!(operation_name(&TypeErasedBox::new("Input")), None);
    }

    #[test]
    fn the_head_writer_keeps_whole_characters() {
        let mut head = Head(String::new());
        let long = "é".repeat(HEAD_BYTES);
        assert!(write!(head, "{long}").is_err());
        assert!(head.0.len() <= HEAD_BYTES && head.0.chars().all(|c| c == 'é'));
    }
}
