//! The per-instance lock: a coordination Lease named after the instance, in the controller's namespace, whose
//! holder is the capture (namespace/name/uid). Two captures never act on one instance at once; a capture
//! that finished, or was deleted, no longer holds it.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams, Preconditions},
};

use super::Context;
use crate::api::ForensicCapture;

pub enum LockState {
    Held,
    /// Another capture holds it.
    HeldBy(String),
}

fn lease_name(instance_id: &str) -> String {
    format!("forensic-capture-{instance_id}")
}

fn holder_of(capture: &ForensicCapture) -> String {
    format!("{}/{}/{}", capture.namespace().unwrap_or_default(), capture.name_any(), capture.uid().unwrap_or_default())
}

/// Whether the capture named by a holder string still exists and has not finished.
async fn holder_active(ctx: &Context, holder: &str) -> Result<bool, kube::Error> {
    let mut parts = holder.splitn(3, '/');
    let (Some(ns), Some(name), Some(uid)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(false);
    };
    let api: Api<ForensicCapture> = Api::namespaced(ctx.client.clone(), ns);
    Ok(match api.get_opt(name).await? {
        Some(other) => other.uid().as_deref() == Some(uid) && other.status.as_ref().is_none_or(|s| s.completed_at.is_none()),
        None => false,
    })
}

pub async fn holds(ctx: &Context, capture: &ForensicCapture, instance_id: &str) -> Result<bool, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.config.lock_namespace);
    let lease = leases.get_opt(&lease_name(instance_id)).await?;
    Ok(lease.and_then(|l| l.spec?.holder_identity).as_deref() == Some(holder_of(capture).as_str()))
}

pub async fn acquire(ctx: &Context, capture: &ForensicCapture, instance_id: &str) -> Result<LockState, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.config.lock_namespace);
    let me = holder_of(capture);
    let name = lease_name(instance_id);
    let spec = LeaseSpec {
        holder_identity: Some(me.clone()),
        acquire_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now())),
        ..Default::default()
    };
    match leases.get_opt(&name).await? {
        None => {
            let lease = Lease { metadata: ObjectMeta { name: Some(name), ..Default::default() }, spec: Some(spec) };
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(LockState::Held),
                // Someone else created it first; the next reconcile sees who.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(LockState::HeldBy("another capture (just now)".into())),
                Err(e) => Err(e),
            }
        }
        Some(existing) => {
            let holder = existing.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default();
            if holder == me {
                return Ok(LockState::Held);
            }
            if !holder.is_empty() && holder_active(ctx, &holder).await? {
                return Ok(LockState::HeldBy(holder));
            }
            // The holder finished or is gone: take over, with the resourceVersion guarding against a race.
            let mut taken = existing.clone();
            taken.spec = Some(spec);
            match leases.replace(&name, &PostParams::default(), &taken).await {
                Ok(_) => Ok(LockState::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(LockState::HeldBy(holder)),
                Err(e) => Err(e),
            }
        }
    }
}

pub async fn release(ctx: &Context, capture: &ForensicCapture, instance_id: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.config.lock_namespace);
    let name = lease_name(instance_id);
    let Some(existing) = leases.get_opt(&name).await? else { return Ok(()) };
    if existing.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(holder_of(capture).as_str()) {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions { resource_version: existing.resource_version(), uid: existing.uid() }),
        ..Default::default()
    };
    match leases.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
