//! Elastic IPs disassociated (only when the spec asks: the address is then free for others until release),
//! recorded for re-association.

use futures::future::BoxFuture;

use super::{Action, Applied, Apply, Restore};
use crate::{aws::ec2::Ec2Api, controller::failure::StepError};

pub struct ElasticIps;

impl Action for ElasticIps {
    fn name(&self) -> &'static str {
        "ElasticIps"
    }

    fn apply<'x>(&'x self, cx: &'x mut Apply<'_, '_>) -> BoxFuture<'x, Result<Applied, StepError>> {
        Box::pin(async move {
            if !cx.sc.capture.spec.steps.isolation.disassociate_elastic_ips {
                return Ok(Applied::NotNeeded("not requested (spec.isolation.disassociateElasticIps)".into()));
            }
            let instance_id = cx.instance_id().to_string();
            let current = cx.sc.aws.ec2.elastic_ips(&instance_id).await.map_err(|e| cx.error(e))?;
            let recorded = &mut cx.record().elastic_ips;
            let new: Vec<_> = current.iter().map(|(_, a)| a.clone()).filter(|a| !recorded.contains(a)).collect();
            if !new.is_empty() {
                recorded.extend(new);
                cx.save().await?;
            }
            for (association_id, _) in &current {
                cx.sc.aws.ec2.disassociate_address(association_id).await.map_err(|e| cx.error(e))?;
            }
            let all = &cx.record().elastic_ips;
            if all.is_empty() {
                return Ok(Applied::NotNeeded("no Elastic IP associated".into()));
            }
            let ips: Vec<&str> = all.iter().map(|a| a.public_ip.as_str()).collect();
            Ok(Applied::Changed(format!("disassociated {}", ips.join(", "))))
        })
    }

    fn restore<'x>(&'x self, cx: &'x Restore<'_>) -> BoxFuture<'x, Result<String, StepError>> {
        Box::pin(async move {
            for association in &cx.record.elastic_ips {
                cx.aws.ec2.associate_address(association).await.map_err(|e| cx.error(e))?;
            }
            Ok(format!("{} Elastic IP(s) associated again", cx.record.elastic_ips.len()))
        })
    }
}
