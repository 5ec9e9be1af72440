//! Volatility symbols for exactly the captured kernel, built by the controller (never on the instance) from
//! the symbol material the volatile step collected: the kernel's BTF, its symbol addresses and its banner
//! become a Volatility 3 ISF (`volatility-symbols.json.xz`), listed as a `VolatilitySymbols` artifact. A
//! responder then needs no debug package and no per-kernel build to analyse the memory image.
//!
//! The ISF is derived evidence: when it cannot be built (an old kernel without BTF, say), the capture goes on
//! and a Warning event says why. The bytes are deterministic, and the object is written once, so a restart
//! finds and records the same object.

use super::{failure::StepError, records, seal, step_context::StepContext};
use crate::{
    api::{ArtifactType, ForensicCaptureStatus, Reason, Step},
    aws::s3::EvidenceStore,
};

pub const ARTIFACT: &str = "volatility-symbols";
const OBJECT: &str = "volatility-symbols.json.xz";

/// Builds and records the ISF from the symbols archive at `symbols_key`, unless it is already recorded.
pub async fn build(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, bucket: &str, prefix: &str, symbols_key: &str) -> Result<(), StepError> {
    if status.artifacts.iter().any(|a| a.name == ARTIFACT) {
        return Ok(());
    }
    let instance_id = sc.instance_id().to_string();
    let key = sc.key(prefix, OBJECT);
    let uri = format!("s3://{bucket}/{key}");
    let archive = match sc.aws.store.get_object(bucket, symbols_key).await {
        Ok(bytes) => bytes,
        Err(e) => return seal::give_up(sc, e, Reason::VolatilitySymbolsNotBuilt, &uri).await,
    };
    // Parsing BTF and compressing the JSON take CPU-seconds and tens of MiB: off the async workers, a few at once.
    let _place = sc.ctx.symbol_builds.acquire().await.map_err(|e| StepError::retry(format!("building Volatility symbols for instance {instance_id}: {e}")))?;
    let started = std::time::Instant::now();
    let (banner, built) = tokio::task::spawn_blocking(move || {
        let inputs = match kernel_isf::inputs_from_archive(&archive) {
            Ok(inputs) => inputs,
            Err(e) => return (None, Err(e)),
        };
        let banner = inputs.banner.as_deref().map(|b| String::from_utf8_lossy(b).trim_end().to_string());
        (banner, kernel_isf::build(&inputs).map(|isf| (isf.to_json_xz(), isf.summary())))
    })
    .await
    .map_err(|e| StepError::retry(format!("building Volatility symbols for instance {instance_id}: {e}")))?;
    // The banner is worth recording even when no ISF can be made: the memory image is checked against it.
    if let Some(target) = status.target.as_mut() {
        target.kernel_banner = banner;
    }
    let (body, summary) = match built {
        Ok(built) => built,
        Err(e) => {
            let message = format!("instance {instance_id}: no Volatility symbols from s3://{bucket}/{symbols_key}: {e}");
            seal::warn(sc, "BuildSymbols", Reason::VolatilitySymbolsNotBuilt, message).await;
            return Ok(());
        }
    };
    tracing::info!(
        instance = %instance_id,
        kernel = %summary.kernel_release,
        types = summary.user_types,
        symbols = summary.symbols,
        typed_symbols = summary.symbols_with_types,
        addresses = ?summary.address_source,
        warnings = ?summary.warnings,
        bytes = body.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Volatility symbols built"
    );
    let stored = match seal::store_once(sc, bucket, &key, body, "application/x-xz").await {
        Ok(stored) => stored,
        Err(e) => return seal::give_up(sc, e, Reason::VolatilitySymbolsNotBuilt, &uri).await,
    };
    let mut artifact = seal::stored_artifact(ARTIFACT, ArtifactType::VolatilitySymbols, &uri, &stored);
    artifact.started_at = records::record(Step::Volatile, status).started_at.clone();
    seal::record_and_lock(sc, status, artifact, bucket, &key).await
}
