//! Tags on the instance naming the capture, the case and the containment state, for anyone who looks at it.

use futures::future::BoxFuture;

use super::{Action, Applied, Apply, Restore};
use crate::{
    aws::ec2::{Ec2Api, tags},
    controller::failure::StepError,
};

pub const CONTAINMENT_TAG: &str = "forensic-capture.dev/containment";

pub struct InstanceTags;

impl Action for InstanceTags {
    fn name(&self) -> &'static str {
        "InstanceTags"
    }

    fn apply<'x>(&'x self, cx: &'x mut Apply<'_, '_>) -> BoxFuture<'x, Result<Applied, StepError>> {
        Box::pin(async move {
            let mut instance_tags = cx.sc.tags();
            instance_tags.retain(|(k, _)| k != tags::INSTANCE_ID);
            instance_tags.push((CONTAINMENT_TAG.into(), "isolated".into()));
            cx.sc.aws.ec2.tag(cx.instance_id(), &instance_tags).await.map_err(|e| cx.error(e))?;
            Ok(Applied::Changed(format!("tagged {CONTAINMENT_TAG}=isolated with the capture and case")))
        })
    }

    fn restore<'x>(&'x self, cx: &'x Restore<'_>) -> BoxFuture<'x, Result<String, StepError>> {
        Box::pin(async move {
            // The capture and case tags stay: they say the instance was captured, which remains true.
            cx.aws.ec2.tag(cx.instance_id, &[(CONTAINMENT_TAG.to_string(), "released".to_string())]).await.map_err(|e| cx.error(e))?;
            Ok(format!("tagged {CONTAINMENT_TAG}=released"))
        })
    }
}
