//! Which AWS clients a capture's calls go through. Calls about the instance go to its region, in its
//! account: the controller's own identity for its own account, a session of the target account's role for
//! another (named after the capture, carrying who asked). The evidence bucket, presign role and signing key
//! are always reached with the controller's own identity, in their own regions. Clients are built once and
//! shared; request pacing is shared per account and region, as AWS's own limits are.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use super::{Context, config::Config, failure::StepError};
use crate::{
    api::Reason,
    aws::{
        AwsError, CaptureClients, ErrorClass, RegionClients,
        clients::{ClientOptions, region_of_arn},
        pacing::Pacer,
        sessions::{self, Session, SessionRequest},
    },
};

/// Who a target-account session acts for.
pub struct Requester<'a> {
    pub uid: &'a str,
    pub case_id: &'a str,
    /// Who asked (see manifest::requester).
    pub who: String,
}

/// The account and role a session could not be had for, and why.
#[derive(Debug)]
pub struct SessionError {
    pub account: String,
    pub role_arn: String,
    pub error: AwsError,
}

impl SessionError {
    /// A retryable STS error is retried; any other ends the capture before it has done anything in the
    /// account, as TargetAccountAccessDenied naming the account and the role.
    pub fn for_instance(self, instance_id: &str) -> StepError {
        let message = format!("cannot reach account {} for instance {instance_id}: assuming role {}: {}", self.account, self.role_arn, self.error);
        match self.error.class() {
            ErrorClass::Retryable => StepError::Retry { message, source: Some(self.error) },
            _ => StepError::Abort { reason: Reason::TargetAccountAccessDenied, message, source: Some(self.error) },
        }
    }

    /// The forensic account cannot be reached: only the copies fail (the evidence stays where it is).
    pub fn for_forensic_copy(self, instance_id: &str) -> StepError {
        let message = format!(
            "cannot reach forensic account {} to copy the snapshots of instance {instance_id}: assuming role {}: {}",
            self.account, self.role_arn, self.error
        );
        match self.error.class() {
            ErrorClass::Retryable => StepError::Retry { message, source: Some(self.error) },
            _ => StepError::Failed { reason: Reason::ForensicAccountAccessDenied, message, source: Some(self.error) },
        }
    }
}

struct SessionEntry {
    session: Session,
    /// The session's clients, per region.
    clients: HashMap<String, RegionClients>,
}

#[derive(Default)]
pub struct ClientCache {
    /// The controller's own clients, per region.
    own: Mutex<HashMap<String, RegionClients>>,
    /// Request pacing per (account, region); "" for the controller's own account.
    pacers: Mutex<HashMap<(String, String), Pacer>>,
    sessions: Mutex<HashMap<SessionRequest, SessionEntry>>,
}

impl ClientCache {
    fn pacer(&self, config: &Config, account: &str, region: &str) -> Pacer {
        let mut pacers = self.pacers.lock().expect("pacers lock");
        pacers
            .entry((account.to_string(), region.to_string()))
            .or_insert_with(|| Pacer::new(&crate::aws::pacing::rates(&config.aws_rate_limits)))
            .clone()
    }

    /// Every session of the capture with `uid` is dropped (it has ended), and any expired one.
    pub fn forget(&self, uid: &str) {
        let tag = (sessions::CAPTURE_UID_TAG.to_string(), uid.to_string());
        let now = SystemTime::now();
        self.sessions.lock().expect("sessions lock").retain(|request, entry| !request.tags.contains(&tag) && entry.session.expires > now);
    }
}

impl Context {
    /// The capture with `uid` has ended: its target-account sessions are dropped.
    pub fn forget_sessions(&self, uid: &str) {
        self.clients.forget(uid);
    }

    fn build(&self, region: &str, account: &str, credentials: Option<aws_sdk_s3::config::Credentials>) -> RegionClients {
        let observe = |service| aws_sdk_s3::config::SharedInterceptor::new(self.metrics.aws_observer(service));
        let options = ClientOptions {
            s3_force_path_style: self.config.s3_force_path_style,
            presign_role_arn: self.config.presign_role_arn.clone(),
            observe: Some(&observe),
            pacer: Some(self.clients.pacer(&self.config, account, region)),
            credentials,
        };
        RegionClients::new(&self.base_aws, Some(region), &options)
    }

    /// The controller's own clients for `region`, built once and shared; every call they make is counted and
    /// timed.
    pub fn aws(&self, region: &str) -> RegionClients {
        let mut own = self.clients.own.lock().expect("clients lock");
        if let Some(clients) = own.get(region) {
            return clients.clone();
        }
        let clients = self.build(region, "", None);
        own.insert(region.to_string(), clients.clone());
        clients
    }

    /// Where the evidence bucket and presign role are reached: --evidence-region, else the controller's
    /// own region, else --default-region.
    pub fn evidence_region(&self) -> String {
        self.config
            .accounts
            .evidence_region
            .clone()
            .or_else(|| self.base_aws.region().map(|r| r.to_string()))
            .unwrap_or_else(|| self.default_region())
    }

    /// Where the signing key is: the region its ARN names, else the evidence region.
    pub fn signing_region(&self) -> String {
        match self.config.protection.kms_signing_key_id.as_deref().and_then(region_of_arn) {
            Some(region) => region.to_string(),
            None => self.evidence_region(),
        }
    }

    /// The clients for a capture of an instance in `region` of `account` (None: the controller's own).
    pub async fn capture_clients(&self, account: Option<&str>, region: &str, requester: &Requester<'_>) -> Result<CaptureClients, SessionError> {
        let instance = match account {
            None => self.aws(region),
            Some(account) => self.session_clients(account, region, requester).await?,
        };
        Ok(CaptureClients::new(instance, self.aws(&self.evidence_region()), self.aws(&self.signing_region())))
    }

    /// Clients in the forensic account, through a session of `role_arn` named after the capture like a
    /// target-account session.
    pub async fn forensic_clients(&self, account: &str, role_arn: &str, region: &str, requester: &Requester<'_>) -> Result<RegionClients, SessionError> {
        self.role_clients(account, role_arn.to_string(), region, requester).await
    }

    async fn session_clients(&self, account: &str, region: &str, requester: &Requester<'_>) -> Result<RegionClients, SessionError> {
        self.role_clients(account, self.config.accounts.role_arn(account), region, requester).await
    }

    async fn role_clients(&self, account: &str, role_arn: String, region: &str, requester: &Requester<'_>) -> Result<RegionClients, SessionError> {
        let accounts = &self.config.accounts;
        let request = SessionRequest::for_capture(
            role_arn.clone(),
            accounts.target_role_external_id.clone(),
            requester.uid,
            requester.case_id,
            &requester.who,
            accounts.target_session_seconds,
        );
        let lifetime = Duration::from_secs(accounts.target_session_seconds.into());
        {
            let mut cached = self.clients.sessions.lock().expect("sessions lock");
            if let Some(entry) = cached.get_mut(&request)
                && !sessions::refresh_due(entry.session.expires, SystemTime::now(), lifetime)
            {
                let credentials = entry.session.credentials.clone();
                let clients = entry.clients.entry(region.to_string()).or_insert_with(|| self.build(region, account, Some(credentials)));
                return Ok(clients.clone());
            }
        }
        // Assumed through STS in the evidence region, with the controller's own identity.
        let sts = self.aws(&self.evidence_region()).store.sts;
        let session = sessions::assume(&sts, &request)
            .await
            .map_err(|error| SessionError { account: account.to_string(), role_arn, error })?;
        tracing::info!(account, role = %request.role_arn, session = %request.session_name, source_identity = %request.source_identity, "assumed a target-account session");
        let clients = self.build(region, account, Some(session.credentials.clone()));
        let mut cached = self.clients.sessions.lock().expect("sessions lock");
        cached.insert(request, SessionEntry { session, clients: HashMap::from([(region.to_string(), clients.clone())]) });
        Ok(clients)
    }
}
