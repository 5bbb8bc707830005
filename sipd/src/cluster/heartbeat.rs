//! The heartbeat: `<prefix>:node:<node>` set with a TTL of `node_ttl_ms` every
//! `heartbeat_ms`, and the node in `<prefix>:nodes`. Its answer is the node's view of Redis:
//! a heartbeat answered after one that was not (or the first) starts a resync, and the node
//! is Up only once that resync is done.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::interfaces::{KeysInterface, SetsInterface};
use fred::types::{Expiration, SetOptions};
use tracing::{error, info, warn};

use super::{COMMAND_TIMEOUT, Cluster, Status};
use crate::mgmt::unix_ms;

/// One heartbeat; whether Redis answered it.
async fn beat(c: &Cluster) -> Result<(), String> {
    let key = c.key(&format!("node:{}", c.node));
    let ttl = i64::try_from(c.cfg.node_ttl_ms).unwrap_or(i64::MAX);
    let now = unix_ms(std::time::SystemTime::now());
    let r = tokio::time::timeout(COMMAND_TIMEOUT, async {
        let _: () = c
            .client
            .set(
                &key,
                now,
                Some(Expiration::PX(ttl)),
                None::<SetOptions>,
                false,
            )
            .await?;
        let _: i64 = c.client.sadd(c.key("nodes"), c.node.as_str()).await?;
        Ok::<(), fred::error::Error>(())
    })
    .await;
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
    }
}

/// Bans, then provisioning, both ways.
async fn resync(c: &Arc<Cluster>) -> Result<super::bans::Resynced, String> {
    let n = super::bans::resync(c).await?;
    super::prov::resync(c).await?;
    Ok(n)
}

/// Runs the heartbeat for as long as the process.
pub(super) fn spawn(c: Arc<Cluster>) {
    tokio::spawn(async move {
        let every = Duration::from_millis(c.cfg.heartbeat_ms);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut said_down = false;
        loop {
            tick.tick().await;
            match beat(&c).await {
                Ok(()) if !c.is_up() => match resync(&c).await {
                    Ok(n) => {
                        c.counts.resyncs.fetch_add(1, Ordering::Relaxed);
                        c.set_status(Status::Up);
                        said_down = false;
                        info!(node = %c.node, bans = ?n, "cluster: connected to Redis and resynced");
                    }
                    Err(e) => {
                        error!(error = %e, "cluster: resync failed; trying again at the next heartbeat")
                    }
                },
                Ok(()) => {}
                Err(e) => {
                    if c.is_up() {
                        c.counts.disconnects.fetch_add(1, Ordering::Relaxed);
                        c.set_status(Status::Down);
                    }
                    if !said_down {
                        warn!(error = %e, "cluster: Redis does not answer; bans applied stay, changes made here wait for it");
                        said_down = true;
                    }
                }
            }
        }
    });
}
