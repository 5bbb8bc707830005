//! The IP firewall: bans, the static deny list, and per-service source ACLs.

use aya_ebpf::maps::lpm_trie::Key;
use relay_common::fw::{
    BAN_LOOKUPS, BanHitKey, BanHits, SVC_RESTRICTED, ServiceEntry, ServiceKey, SvcAllowV4,
    SvcAllowV6, svc_allow_prefix, svc_port_bit,
};

use crate::{
    maps::{
        BAN_HITS, BANS_V4, BANS_V6, DENY_V4, DENY_V6, SERVICES, SVC_ALLOW_V4, SVC_ALLOW_V6,
        SVC_PORTS,
    },
    parse::{Family, Packet},
};

#[derive(Clone, Copy)]
pub enum FwDrop {
    Banned,
    Denied,
    ServiceAcl,
}

/// Bans and static deny: decided on the source alone, so they apply to every IP packet,
/// fragments and ICMP included; a banned host gets nothing through.
#[inline(never)]
pub fn check_source(pkt: &Packet, now_ns: u64) -> Result<(), FwDrop> {
    // The longest banned prefix holding the source decides; when it has expired (and is not
    // purged yet), the next shorter one is asked. A trie update swaps whole nodes (RCU), so a
    // concurrent userspace change cannot tear the value read here.
    let (mut len, max) = match pkt.family {
        Family::V4 => (32, 32),
        Family::V6 => (128, 128),
    };
    for _ in 0..BAN_LOOKUPS {
        let ban = match pkt.family {
            Family::V4 => BANS_V4.get(Key::new(len, pkt.src.v4_octets())),
            Family::V6 => BANS_V6.get(Key::new(len, pkt.src.bytes())),
        };
        let Some(ban) = ban else { break };
        if ban.is_active(now_ns) {
            count_hit(pkt, ban.prefix_len, now_ns);
            return Err(FwDrop::Banned);
        }
        // An entry from the old hash (0) or a corrupt length: stop rather than loop.
        if ban.prefix_len == 0 || ban.prefix_len > max {
            break;
        }
        len = ban.prefix_len - 1;
    }
    let denied = match pkt.family {
        Family::V4 => DENY_V4.get(Key::new(32, pkt.src.v4_octets())).is_some(),
        Family::V6 => DENY_V6.get(Key::new(128, pkt.src.bytes())).is_some(),
    };
    if denied {
        return Err(FwDrop::Denied);
    }
    Ok(())
}

/// Counts a drop on the ban of `prefix_len` bits holding the source, in this CPU's slot.
#[inline(always)]
fn count_hit(pkt: &Packet, prefix_len: u32, now_ns: u64) {
    let key = BanHitKey::new(pkt.src.0, prefix_len, pkt.family == Family::V4);
    match BAN_HITS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU element; XDP does not preempt itself.
        Some(h) => unsafe {
            (*h).hits += 1;
            (*h).last_ns = now_ns;
        },
        None => {
            // Full: the LRU evicts the ban hit longest ago.
            let _ = BAN_HITS.insert(
                key,
                BanHits {
                    hits: 1,
                    last_ns: now_ns,
                },
                0,
            );
        }
    }
}

/// The service listening on this port, if any, once its ACL admits the source.
#[inline(never)]
pub fn service_acl(pkt: &Packet, port: u16, proto: u8) -> Result<Option<ServiceEntry>, FwDrop> {
    // No bit, no service on this port: the hash lookup (a miss for every relayed packet) is
    // skipped. Userspace sets the bit before it adds a service and clears it after it removes
    // the last one on the port, so a clear bit never hides a service.
    let (word, bit) = svc_port_bit(port);
    match SVC_PORTS.get(word) {
        Some(w) if *w & bit != 0 => {}
        _ => return Ok(None),
    }
    let Some(svc) = SERVICES.get_ptr(ServiceKey::new(port, proto)) else {
        return Ok(None);
    };
    // SAFETY: as for bans: plain data, a torn read misroutes at most one packet's ACL check.
    let svc = unsafe { svc.read() };
    if svc.flags & SVC_RESTRICTED != 0 {
        // The service id leads the key, so one trie holds every service's list and a
        // longest-prefix match can never cross from one service into another.
        let allowed = match pkt.family {
            Family::V4 => {
                let data = SvcAllowV4::new(svc.service, pkt.src.v4_octets());
                SVC_ALLOW_V4
                    .get(Key::new(svc_allow_prefix(32), data))
                    .is_some()
            }
            Family::V6 => {
                let data = SvcAllowV6::new(svc.service, pkt.src.bytes());
                SVC_ALLOW_V6
                    .get(Key::new(svc_allow_prefix(128), data))
                    .is_some()
            }
        };
        if !allowed {
            return Err(FwDrop::ServiceAcl);
        }
    }
    Ok(Some(svc))
}
