//! Pruning the shared ban hash while connected: expired bans and old tombstones leave it a
//! bounded slice (`HSCAN ... COUNT`) per tick, so a large hash never costs one long
//! command, and the journal forgets them once a whole pass is done.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fred::interfaces::LuaInterface;
use tracing::debug;

use super::bans::TOMBSTONE_MS;
use super::{COMMAND_TIMEOUT, Cluster};
use crate::firewall::BanRecord;
use crate::mgmt::unix_ms;

/// Bans expired longer than this ago leave the hash and the journal (a little slack for
/// clocks that differ).
const EXPIRED_GRACE_MS: u64 = 60_000;

/// Fields of the hash looked at per prune tick: bounded work, while a pass over 100 000 bans
/// takes 200 ticks.
const PRUNE_PER_TICK: u32 = 500;

/// One prune step: `HSCAN KEYS[1] ARGV[1] COUNT ARGV[2]`, deleting the records expired
/// before `ARGV[3]` and the tombstones older than `ARGV[4]` (Unix ms). `{next cursor,
/// deleted}`.
const PRUNE: &str = r"
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local expired, old = tonumber(ARGV[3]), tonumber(ARGV[4])
local n = 0
for i = 1, #r[2], 2 do
  local ok, c = pcall(cjson.decode, r[2][i + 1])
  if ok and type(c) == 'table' and type(c.version) == 'number' then
    local drop
    if c.removed == true then
      drop = c.version < old
    else
      drop = type(c.until_ms) == 'number' and c.until_ms <= expired
    end
    if drop then
      redis.call('HDEL', KEYS[1], r[2][i])
      n = n + 1
    end
  end
end
return {r[1], n}
";

/// Whether `r` may leave the hash and the journal at `now`.
pub(super) fn prunable(r: &BanRecord, now: u64) -> bool {
    r.expired(now.saturating_sub(EXPIRED_GRACE_MS))
        || (r.removed && r.version.saturating_add(TOMBSTONE_MS) < now)
}

/// One bounded step of pruning the hash; at the end of a pass, the journal too.
pub(super) async fn tick(c: &Arc<Cluster>) {
    let now = unix_ms(std::time::SystemTime::now());
    let cursor = c
        .bans
        .cursor
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let args = vec![
        cursor,
        PRUNE_PER_TICK.to_string(),
        now.saturating_sub(EXPIRED_GRACE_MS).to_string(),
        now.saturating_sub(TOMBSTONE_MS).to_string(),
    ];
    let fut = c
        .client
        .eval::<(String, u64), _, _, _>(PRUNE, vec![super::bans::hash(c)], args);
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok((next, n))) => {
            c.counts.bans_pruned.fetch_add(n, Ordering::Relaxed);
            if next == "0" {
                let forgotten = c.bans.prune_journal(now);
                debug!(forgotten, "cluster: pass over the shared bans done");
            }
            *c.bans.cursor.lock().unwrap_or_else(|p| p.into_inner()) = next;
        }
        // A miss costs nothing: the next tick tries again from the same place.
        Ok(Err(e)) => debug!(error = %e, "cluster: ban pruning step failed"),
        Err(_) => debug!("cluster: ban pruning step not answered"),
    }
}
