//! The relay's route cache (`relay_common::route`): the kernel looks a leg's route up once and
//! reuses it, so these check what a cache can get wrong: a neighbour that changes its MAC, a
//! frame longer than any the route was confirmed for (the MTU check), and a leg whose peer
//! moves.

use aya::maps::Array;
use relay_common::route::Route;

use super::*;

const A_PORT: u16 = 42000;
const B_PORT: u16 = 42002;
const NEW_B_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x33];

fn route(env: &mut Env, port: u16) -> Route {
    let routes: Array<_, Route> = Array::try_from(env.map(names::ROUTES)).unwrap();
    routes.get(&u32::from(port), 0).unwrap()
}

fn from_a(payload: &[u8]) -> Vec<u8> {
    udp4(PEER_A4, 4000, RELAY4, A_PORT, payload)
        .macs(PEER_MAC, RELAY_MAC)
        .build()
}

/// Relays one packet from A and returns the action and the destination MAC it left with.
fn relay(env: &mut Env, payload: &[u8]) -> (u32, Mac) {
    let (action, out) = env.run(&from_a(payload), IF0, 1);
    (action, out[..6].try_into().unwrap())
}

fn set_b_mac(ns: &Netns, mac: Mac) {
    ns.ip([
        "neigh",
        "replace",
        "10.0.0.3",
        "lladdr",
        &mac_str(mac),
        "dev",
        "if0",
        "nud",
        "permanent",
    ])
    .unwrap();
}

#[test]
fn a_cached_route_follows_a_new_neighbour_mac_and_rechecks_longer_frames() {
    tests::require_privileged!();
    let ns = make_netns();
    ns.enter(|| {
        let mut env = Env::new("routes");
        env.leg(leg(
            A_PORT,
            Ip::V4(RELAY4),
            Ip::V4(PEER_A4),
            4000,
            B_PORT,
            KNOWN,
        ));
        env.leg(leg(
            B_PORT,
            Ip::V4(RELAY4),
            Ip::V4(PEER_B4),
            5000,
            A_PORT,
            KNOWN,
        ));

        // The first packet looks the route up and leaves it in B's slot.
        assert_eq!(relay(&mut env, RTP), (XDP_TX, PEER_B_MAC));
        let r = route(&mut env, B_PORT);
        assert_eq!(
            (r.src, r.dst),
            (Addr::from_v4(RELAY4), Addr::from_v4(PEER_B4))
        );
        assert_eq!(
            (r.sport, r.dport, r.ingress, r.ifindex),
            (B_PORT, 5000, IF0, IF0)
        );
        assert_eq!((r.smac, r.dmac), (RELAY_MAC, PEER_B_MAC));
        assert_ne!(r.until, 0);
        let len = r.len;

        // B's next hop changes its MAC: the cached route is used until it ages (about a
        // second), then the new MAC is looked up. Polled, not timed.
        set_b_mac(&ns, NEW_B_MAC);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (action, mac) = relay(&mut env, RTP);
            assert_eq!(action, XDP_TX);
            if mac == NEW_B_MAC {
                break;
            }
            assert_eq!(mac, PEER_B_MAC, "only the old or the new MAC");
            assert!(std::time::Instant::now() < deadline, "the route never aged");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(route(&mut env, B_PORT).dmac, NEW_B_MAC);

        // A frame longer than the route was confirmed for is looked up again: over the MTU it
        // goes to the userspace relay (which fragments), never out through the kernel.
        ns.ip(["link", "set", "if0", "mtu", "600"]).unwrap();
        let big = vec![0x80u8; 1000];
        let before = env.stat(Stat::RelayToUserspace);
        assert_eq!(relay(&mut env, &big).0, XDP_PASS);
        assert_eq!(env.stat(Stat::RelayToUserspace), before + 1);
        // The short frames still go by the cached route, which kept its length.
        assert_eq!(relay(&mut env, RTP), (XDP_TX, NEW_B_MAC));
        assert_eq!(route(&mut env, B_PORT).len, len);
        // Under the MTU, a longer frame confirms the route for its length.
        let mid = vec![0x80u8; 400];
        assert_eq!(relay(&mut env, &mid).0, XDP_TX);
        assert!(route(&mut env, B_PORT).len > len);

        // B's peer moves (a re-INVITE): the entry no longer matches and is looked up for the
        // new peer, at once.
        env.leg(leg(
            B_PORT,
            Ip::V4(RELAY4),
            Ip::V4(PEER_A4),
            5002,
            A_PORT,
            KNOWN,
        ));
        let (action, out) = env.run(&from_a(RTP), IF0, 1);
        assert_eq!(action, XDP_TX);
        assert_eq!(out[..6], PEER_MAC);
        let r = route(&mut env, B_PORT);
        assert_eq!((r.dst, r.dport), (Addr::from_v4(PEER_A4), 5002));
    });
}
