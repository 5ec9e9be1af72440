//! SQS: the finding queue that EventBridge rules feed (controller/intake.rs reads it).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::MessageSystemAttributeName;

use super::{AwsError, clients::retry_config};

/// One message as received.
#[derive(Debug, Clone)]
pub struct QueueMessage {
    pub id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How many times SQS has delivered it (1 the first time).
    pub receive_count: u32,
}

#[derive(Clone)]
pub struct FindingQueue {
    client: aws_sdk_sqs::Client,
    pub url: String,
}

/// The Region of a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME), when it names one; any other
/// URL (a VPC endpoint, a local emulator) is reached in the controller's own Region.
pub fn queue_region(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let region = host.strip_prefix("sqs.")?.split('.').next()?;
    (!region.is_empty() && host.contains(".amazonaws.com")).then(|| region.to_string())
}

impl FindingQueue {
    pub fn new(base: &SdkConfig, url: &str, observe: Option<aws_sdk_sqs::config::SharedInterceptor>) -> Self {
        let mut config = base.to_builder();
        if let Some(region) = queue_region(url) {
            config.set_region(Some(aws_config::Region::new(region)));
        }
        let mut builder = aws_sdk_sqs::config::Builder::from(&config.build()).retry_config(retry_config());
        if let Some(observe) = observe {
            builder.push_interceptor(observe);
        }
        FindingQueue { client: aws_sdk_sqs::Client::from_conf(builder.build()), url: url.to_string() }
    }

    /// Long-polls for up to ten messages, waiting at most `wait` for the first.
    pub async fn receive(&self, wait: Duration) -> Result<Vec<QueueMessage>, AwsError> {
        let call = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send();
        let output = bounded("sqs:ReceiveMessage", wait + CALL_TIMEOUT, call).await?.map_err(|e| AwsError::from_sdk("sqs:ReceiveMessage", e))?;
        Ok(output
            .messages()
            .iter()
            .map(|m| QueueMessage {
                id: m.message_id().unwrap_or_default().to_string(),
                receipt_handle: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    pub async fn delete(&self, message: &QueueMessage) -> Result<(), AwsError> {
        let call = self.client.delete_message().queue_url(&self.url).receipt_handle(&message.receipt_handle).send();
        bounded("sqs:DeleteMessage", CALL_TIMEOUT, call).await?.map_err(|e| AwsError::from_sdk("sqs:DeleteMessage", e))?;
        Ok(())
    }
}

/// How long one queue call may take (beyond a receive's long-poll wait). The intake handles one message at a
/// time, so a call that hangs would hold every finding behind it; one cut short loses nothing (an undeleted
/// message comes back, and its capture is found already there).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

async fn bounded<T>(operation: &'static str, limit: Duration, call: impl Future<Output = T>) -> Result<T, AwsError> {
    tokio::time::timeout(limit, call).await.map_err(|_| AwsError::local(operation, "Timeout", format!("no answer in {} s", limit.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_aws_queue_url_only() {
        assert_eq!(queue_region("https://sqs.eu-west-1.amazonaws.com/123456789012/findings").as_deref(), Some("eu-west-1"));
        assert_eq!(queue_region("http://127.0.0.1:5000/123456789012/findings"), None);
        assert_eq!(queue_region("https://vpce-1.sqs.us-east-1.vpce.amazonaws.com/1/q"), None);
    }
}
