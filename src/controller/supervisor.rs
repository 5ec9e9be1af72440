//! The process's life: serve /metrics and the probes, win the leader election, run the controllers while
//! leading, and on SIGTERM let running reconciles finish their current step, then hand the Lease over.

use std::sync::Arc;

use futures::FutureExt;

use super::{Context, health, leader::LeaderElection};

/// Runs until `shutdown` resolves (SIGTERM) and the controllers have stopped. Exits the process (status 1)
/// if leadership is lost, so that nothing keeps acting without the Lease.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) -> anyhow::Result<()> {
    let ops = ctx.config.operations.clone();
    ops.validate().map_err(anyhow::Error::msg)?;
    let listener = health::bind(ops.metrics_bind_address).await?;
    tokio::spawn(health::serve(listener, ctx.health.clone(), ctx.metrics.clone()));
    let shutdown = shutdown.boxed().shared();

    let mut election = ops.leader_elect.then(|| LeaderElection::new(&ctx));
    if let Some(election) = &mut election {
        tokio::select! {
            () = election.acquire() => {}
            () = shutdown.clone() => {
                tracing::info!("shutdown while standing by: nothing to hand over");
                return Ok(());
            }
        }
    }
    ctx.health.set_leading();
    ctx.metrics.set_leader(true);

    let stopping = {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            ctx.health.stop();
            tracing::info!("shutdown: taking no new work; running reconciles end after their current step");
        }
    }
    .boxed()
    .shared();
    let controllers = super::run_controllers(ctx.clone(), stopping.clone());
    let grace_over = async {
        stopping.await;
        tokio::time::sleep(ops.shutdown_grace()).await;
    };
    let stopped_in_time = async {
        tokio::select! {
            () = controllers => true,
            () = grace_over => false,
        }
    };
    let stopped_in_time = match &mut election {
        None => stopped_in_time.await,
        // The Lease is renewed until the controllers have stopped: the shutdown itself happens under it.
        Some(election) => tokio::select! {
            lost = election.keep() => {
                tracing::error!(reason = %lost.0, "leader election: lost the Lease; exiting so that nothing acts without it");
                std::process::exit(1);
            }
            clean = stopped_in_time => clean,
        },
    };
    ctx.metrics.set_leader(false);
    match (&mut election, stopped_in_time) {
        (Some(election), true) => election.release().await,
        (_, true) => {}
        // Reconciles still running are cut off when the process exits, as in a crash (which the steps
        // survive). The Lease is kept: releasing it while they might still run could let two act at once.
        (_, false) => tracing::warn!(grace = ?ops.shutdown_grace(), "reconciles still running after the shutdown grace; exiting without them"),
    }
    Ok(())
}
