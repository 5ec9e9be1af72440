//! DisableApiTermination on, shutdown behaviour stop, DeleteOnTermination off on every volume: the evidence
//! cannot be destroyed by terminating the instance.

use futures::future::BoxFuture;

use super::{Action, Applied, Apply, Restore};
use crate::{
    api::{TerminationRecord, VolumeTermination},
    aws::ec2::{Ec2Api, TerminationSettings},
    controller::failure::StepError,
};

pub struct TerminationSafeguards;

impl Action for TerminationSafeguards {
    fn name(&self) -> &'static str {
        "TerminationSafeguards"
    }

    fn apply<'x>(&'x self, cx: &'x mut Apply<'_, '_>) -> BoxFuture<'x, Result<Applied, StepError>> {
        Box::pin(async move {
            let ec2 = &cx.sc.aws.ec2;
            let instance_id = cx.instance_id().to_string();
            if cx.record().termination.is_none() {
                let instance = cx.instance().await?.clone();
                let settings = ec2.termination_settings(&instance).await.map_err(|e| cx.error(e))?;
                cx.record().termination = Some(TerminationRecord {
                    disable_api_termination: settings.disable_api_termination,
                    shutdown_behavior: settings.shutdown_behavior,
                    volumes: settings
                        .volumes
                        .into_iter()
                        .map(|(device_name, volume_id, delete_on_termination)| VolumeTermination { device_name, volume_id, delete_on_termination })
                        .collect(),
                });
                cx.save().await?;
            }
            let volumes: Vec<(String, String, bool)> = cx
                .record()
                .termination
                .as_ref()
                .map(|t| t.volumes.iter().map(|v| (v.device_name.clone(), v.volume_id.clone(), false)).collect())
                .unwrap_or_default();
            let count = volumes.len();
            let safeguards = TerminationSettings { disable_api_termination: true, shutdown_behavior: "stop".into(), volumes };
            ec2.set_termination_settings(&instance_id, &safeguards).await.map_err(|e| cx.error(e))?;
            Ok(Applied::Changed(format!("termination protection on, shutdown behaviour stop, DeleteOnTermination=false on {count} volume(s)")))
        })
    }

    fn restore<'x>(&'x self, cx: &'x Restore<'_>) -> BoxFuture<'x, Result<String, StepError>> {
        Box::pin(async move {
            let Some(previous) = &cx.record.termination else { return Ok("no termination settings recorded".into()) };
            let settings = TerminationSettings {
                disable_api_termination: previous.disable_api_termination,
                shutdown_behavior: previous.shutdown_behavior.clone(),
                volumes: previous.volumes.iter().map(|v| (v.device_name.clone(), v.volume_id.clone(), v.delete_on_termination)).collect(),
            };
            cx.aws.ec2.set_termination_settings(cx.instance_id, &settings).await.map_err(|e| cx.error(e))?;
            Ok(format!(
                "DisableApiTermination {}, shutdown behaviour {}, DeleteOnTermination restored on {} volume(s)",
                previous.disable_api_termination,
                previous.shutdown_behavior,
                previous.volumes.len()
            ))
        })
    }
}
