//! Firewall evasion: fragments, IPv6 extension headers, QinQ and new TCP connections, with SIP
//! restricted to an allow list. Each attack is judged like a plain packet from the same
//! source; what the attacker hoped to slip past never reaches the SIP port.

use super::*;

/// In SIP's allow list (`restrict_sip`).
const IN4: [u8; 4] = [192, 0, 2, 10];
/// Outside it.
const OUT4: [u8; 4] = [198, 18, 0, 9];
fn in6() -> [u8; 16] {
    v6("2001:db8:1::10")
}
fn out6() -> [u8; 16] {
    v6("2001:db8:2::9")
}

const HOPOPTS: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DSTOPTS: u8 = 60;
const UDP: u8 = 17;

/// SIP over UDP restricted to 192.0.2.0/24 and 2001:db8:1::/48 (the carrier's networks).
fn restrict_sip(e: &mut Env) {
    e.service(SIP, PROTO_UDP, 1, SVC_SIP | SVC_RESTRICTED);
    e.service(SIP, PROTO_TCP, 1, SVC_SIP | SVC_RESTRICTED);
    e.allow_v4(1, [192, 0, 2, 0], 24);
    e.allow_v6(1, v6("2001:db8:1::"), 48);
}

/// A UDP segment (header, checksum and all) carrying `payload`, as the sender computed it
/// before fragmenting.
fn udp_segment(src: Ip, dst: Ip, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut proto = 0;
    Frame::udp(src, 5060, dst, dport, payload).l4_bytes(&mut proto)
}

fn eth(out: &mut Vec<u8>, ethertype: u16) {
    out.extend(RELAY_MAC);
    out.extend(PEER_MAC);
    out.extend(ethertype.to_be_bytes());
}

/// One IPv4 fragment of `seg` (bytes `at..at + len`), identification `id`.
fn v4_frag(src: [u8; 4], seg: &[u8], id: u16, at: usize, len: usize) -> Vec<u8> {
    let end = (at + len).min(seg.len());
    let more = end < seg.len();
    let mut out = Vec::new();
    eth(&mut out, ETH_P_IP);
    let mut h = vec![0x45, 0];
    h.extend(((20 + end - at) as u16).to_be_bytes());
    h.extend(id.to_be_bytes());
    h.extend((((at / 8) as u16) | if more { 0x2000 } else { 0 }).to_be_bytes());
    h.extend([64, UDP, 0, 0]);
    h.extend(src);
    h.extend(RELAY4);
    let c = csum::checksum(0, &h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    out.extend(h);
    out.extend(&seg[at..end]);
    out
}

/// An 8-byte options header (hop-by-hop or destination options): one PadN option.
fn opts() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0]
}

/// A routing header with no segments left: the stack ignores its type and reads on.
fn routing() -> Vec<u8> {
    vec![0, 0, 253, 0, 0, 0, 0, 0]
}

fn frag_hdr(offset: usize, more: bool, id: u32) -> Vec<u8> {
    let mut h = vec![0, 0];
    h.extend((offset as u16 | u16::from(more)).to_be_bytes());
    h.extend(id.to_be_bytes());
    h
}

/// An IPv6 packet from `src` to the relay: the extension headers `chain` (type, header with
/// its next-header byte left for this to fill), then `rest` as protocol `proto`.
fn v6_chain(src: [u8; 16], chain: &[(u8, Vec<u8>)], proto: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    eth(&mut out, ETH_P_IPV6);
    let ext: usize = chain.iter().map(|(_, h)| h.len()).sum();
    out.extend([0x60, 0, 0, 0]);
    out.extend(((ext + rest.len()) as u16).to_be_bytes());
    out.push(chain.first().map_or(proto, |c| c.0));
    out.push(64);
    out.extend(src);
    out.extend(relay6());
    for (i, (_, h)) in chain.iter().enumerate() {
        let mut h = h.clone();
        h[0] = chain.get(i + 1).map_or(proto, |c| c.0);
        out.extend(h);
    }
    out.extend(rest);
    out
}

/// A SIP INVITE big enough to be fragmented at a 1500-byte MTU.
fn big_invite() -> Vec<u8> {
    let mut m = sip("INVITE");
    m.extend(b"X-Pad: ");
    m.extend(vec![b'p'; 2000]);
    m.extend(b"\r\n\r\n");
    m
}

/// A frame with two VLAN tags: `outer` ethertype (802.1ad or 802.1Q), then 802.1Q.
fn qinq(frame: Vec<u8>, outer: u16) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend(outer.to_be_bytes());
    out.extend(100u16.to_be_bytes());
    out.extend(ETH_P_8021Q.to_be_bytes());
    out.extend(7u16.to_be_bytes());
    out.extend(&frame[12..]);
    out
}

fn frag_key(src: Ip, id: u32, proto: u8) -> FragKey {
    FragKey {
        src: src.addr(),
        dst: match src {
            Ip::V4(_) => Addr::from_v4(RELAY4),
            Ip::V6(_) => Addr::from_v6(relay6()),
        },
        id,
        proto,
        _pad: [0; 3],
    }
}

fn v4_fragment_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let seg = |src| udp_segment(Ip::V4(src), Ip::V4(RELAY4), SIP, &big_invite());
    let (bad, good) = (seg(OUT4), seg(IN4));
    vec![
        fx(
            "IPv4: first fragment of an INVITE from outside the SIP allow list",
            v4_frag(OUT4, &bad, 0x100, 0, 1480),
            XDP_DROP,
            DropServiceAcl,
        )
        .after(|e| {
            let v = e.frag_verdict(frag_key(Ip::V4(OUT4), 0x100, UDP)).unwrap();
            assert_eq!(v.verdict, FRAG_DROP, "remembered");
        }),
        fx(
            "IPv4: its later fragment follows the drop",
            v4_frag(OUT4, &bad, 0x100, 1480, 1480),
            XDP_DROP,
            DropFragment,
        ),
        fx(
            "IPv4: a later fragment of a datagram never seen",
            v4_frag(OUT4, &bad, 0x101, 1480, 1480),
            XDP_DROP,
            DropFragmentUnknown,
        ),
        fx(
            "IPv4: a later fragment from an allowed source with no first fragment",
            v4_frag(IN4, &good, 0x102, 1480, 1480),
            XDP_DROP,
            DropFragmentUnknown,
        ),
        fx(
            "IPv4: an allowed source's first fragment passes the ACL and the guard",
            v4_frag(IN4, &good, 0x200, 0, 1480),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "IPv4: and its later fragments follow it",
            v4_frag(IN4, &good, 0x200, 1480, 1480),
            XDP_PASS,
            PassFragment,
        )
        .repeat(2),
        fx(
            "IPv4: a later fragment once the verdict has expired",
            v4_frag(IN4, &good, 0x200, 1480, 1480),
            XDP_DROP,
            DropFragmentUnknown,
        )
        .setup(|e| {
            let key = frag_key(Ip::V4(IN4), 0x200, UDP);
            let mut v = e.frag_verdict(key).unwrap();
            v.at_ns -= FRAG_VERDICT_TTL_NS;
            e.set_frag_verdict(key, v);
        }),
        fx(
            "IPv4: a tiny first fragment (the INVITE pushed into the next one)",
            v4_frag(IN4, &good, 0x300, 0, 16),
            XDP_DROP,
            DropFragmentTiny,
        ),
        fx(
            "IPv4: a first fragment to a relay port is left to the stack, not rewritten",
            v4_frag(
                PEER_A4,
                &udp_segment(Ip::V4(PEER_A4), Ip::V4(RELAY4), 30000, &[0; 2000]),
                0x400,
                0,
                1480,
            ),
            XDP_PASS,
            PassOther,
        ),
        fx(
            "IPv4: a banned source's later fragment",
            v4_frag(IN4, &good, 0x200, 1480, 1480),
            XDP_DROP,
            DropBanned,
        )
        .setup(|e| e.ban(Ip::V4(IN4), BanEntry::PERMANENT))
        .after(|e| e.unban(Ip::V4(IN4))),
    ]
}

fn v6_fragment_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let seg = |src| udp_segment(Ip::V6(src), Ip::V6(relay6()), SIP, &big_invite());
    let (bad, good) = (seg(out6()), seg(in6()));
    let frag = |src, seg: &[u8], id, at: usize, len: usize| {
        let end = (at + len).min(seg.len());
        v6_chain(
            src,
            &[(FRAGMENT, frag_hdr(at, end < seg.len(), id))],
            UDP,
            &seg[at..end],
        )
    };
    vec![
        fx(
            "IPv6: first fragment of an INVITE from outside the SIP allow list",
            frag(out6(), &bad, 0x1_0000, 0, 1448),
            XDP_DROP,
            DropServiceAcl,
        ),
        fx(
            "IPv6: its later fragment follows the drop",
            frag(out6(), &bad, 0x1_0000, 1448, 1448),
            XDP_DROP,
            DropFragment,
        ),
        fx(
            "IPv6: a later fragment of a datagram never seen",
            frag(out6(), &bad, 0x1_0001, 1448, 1448),
            XDP_DROP,
            DropFragmentUnknown,
        ),
        fx(
            "IPv6: an allowed source's first fragment passes",
            frag(in6(), &good, 0x2_0000, 0, 1448),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "IPv6: and its later fragment follows it",
            frag(in6(), &good, 0x2_0000, 1448, 1448),
            XDP_PASS,
            PassFragment,
        ),
        fx(
            "IPv6: the 32-bit identification tells datagrams apart",
            frag(in6(), &good, 0x3_0000, 1448, 1448),
            XDP_DROP,
            DropFragmentUnknown,
        ),
        fx(
            "IPv6: an atomic fragment (offset 0, no More) from outside is judged whole",
            v6_chain(out6(), &[(FRAGMENT, frag_hdr(0, false, 9))], UDP, &{
                udp_segment(Ip::V6(out6()), Ip::V6(relay6()), SIP, &sip("INVITE"))
            }),
            XDP_DROP,
            DropServiceAcl,
        ),
        fx(
            "IPv6: a tiny first fragment behind destination options",
            v6_chain(
                out6(),
                &[(DSTOPTS, opts()), (FRAGMENT, frag_hdr(0, true, 5))],
                UDP,
                &bad[..8],
            ),
            XDP_DROP,
            DropFragmentTiny,
        ),
    ]
}

fn v6_extension_header_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let invite = |src| udp_segment(Ip::V6(src), Ip::V6(relay6()), SIP, &sip("INVITE"));
    let mut out = Vec::new();
    for (outside, inside, ty, hdr) in [
        (
            "IPv6: hop-by-hop in front of UDP to SIP, from outside",
            "IPv6: hop-by-hop in front of UDP to SIP, from the allow list",
            HOPOPTS,
            opts(),
        ),
        (
            "IPv6: routing header in front of UDP to SIP, from outside",
            "IPv6: routing header in front of UDP to SIP, from the allow list",
            ROUTING,
            routing(),
        ),
        (
            "IPv6: destination options in front of UDP to SIP, from outside",
            "IPv6: destination options in front of UDP to SIP, from the allow list",
            DSTOPTS,
            opts(),
        ),
    ] {
        out.push(fx(
            outside,
            v6_chain(out6(), &[(ty, hdr.clone())], UDP, &invite(out6())),
            XDP_DROP,
            DropServiceAcl,
        ));
        out.push(fx(
            inside,
            v6_chain(in6(), &[(ty, hdr)], UDP, &invite(in6())),
            XDP_PASS,
            PassSip,
        ));
    }
    let chain = |n: usize| -> Vec<(u8, Vec<u8>)> { (0..n).map(|_| (DSTOPTS, opts())).collect() };
    out.extend([
        fx(
            "IPv6: every kind in one chain, from outside",
            v6_chain(
                out6(),
                &[
                    (HOPOPTS, opts()),
                    (DSTOPTS, opts()),
                    (ROUTING, routing()),
                    (FRAGMENT, frag_hdr(0, false, 3)),
                    (DSTOPTS, opts()),
                ],
                UDP,
                &invite(out6()),
            ),
            XDP_DROP,
            DropServiceAcl,
        ),
        fx(
            "IPv6: the longest chain walked (6 headers), from the allow list",
            v6_chain(in6(), &chain(MAX_EXT_HEADERS), UDP, &invite(in6())),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "IPv6: one header more than the walk takes",
            v6_chain(in6(), &chain(MAX_EXT_HEADERS + 1), UDP, &invite(in6())),
            XDP_DROP,
            DropIpv6ExtHeaders,
        ),
        fx(
            "IPv6: UDP pushed beyond the deepest offset the program reads",
            v6_chain(
                in6(),
                &[(HOPOPTS, {
                    // 26 units: 8 + 208 bytes, so UDP would start at 14 + 40 + 216 = 270.
                    let mut h = vec![0, 26, 1, 212];
                    h.extend(vec![0; 212]);
                    h
                })],
                UDP,
                &invite(in6()),
            ),
            XDP_DROP,
            DropIpv6ExtHeaders,
        ),
        fx(
            "IPv6: an extension header cut off by the frame",
            {
                let mut f = v6_chain(in6(), &[(DSTOPTS, opts())], UDP, &[]);
                f.truncate(14 + 40 + 1);
                f[14 + 5] = 1; // payload length: the one byte there is
                f
            },
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "IPv6: an extension header longer than the IP payload",
            {
                let mut f = v6_chain(in6(), &[(DSTOPTS, opts())], UDP, &invite(in6()));
                f[14 + 40 + 1] = 20; // 168 bytes claimed, fewer there
                f
            },
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "IPv6: RTP behind a destination-options header is left to the stack",
            v6_chain(
                peer_a6(),
                &[(DSTOPTS, opts())],
                UDP,
                &udp_segment(Ip::V6(peer_a6()), Ip::V6(relay6()), 31000, RTP),
            ),
            XDP_PASS,
            PassOther,
        ),
    ]);
    out
}

fn qinq_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let invite = |src| udp4(src, 5060, RELAY4, SIP, &sip("INVITE")).build();
    vec![
        fx(
            "QinQ (802.1ad outer tag): INVITE from outside the SIP allow list",
            qinq(invite(OUT4), 0x88a8),
            XDP_DROP,
            DropServiceAcl,
        ),
        fx(
            "QinQ (802.1Q outer tag): INVITE from outside the SIP allow list",
            qinq(invite(OUT4), ETH_P_8021Q),
            XDP_DROP,
            DropServiceAcl,
        ),
        fx(
            "QinQ: INVITE from the allow list",
            qinq(invite(IN4), 0x88a8),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "QinQ over IPv6 from outside",
            qinq(
                udp6(out6(), 5060, relay6(), SIP, &sip("INVITE")).build(),
                0x88a8,
            ),
            XDP_DROP,
            DropServiceAcl,
        ),
        fx(
            "QinQ: a banned source",
            qinq(udp4(OUT4, 5060, RELAY4, 9999, b"x").build(), 0x88a8),
            XDP_DROP,
            DropBanned,
        )
        .setup(|e| e.ban(Ip::V4(OUT4), BanEntry::PERMANENT))
        .after(|e| e.unban(Ip::V4(OUT4))),
        fx("QinQ ARP", qinq(arp(None), 0x88a8), XDP_PASS, PassNotIp),
        fx(
            "QinQ: media is left to the stack (no VLAN on the egress lookup)",
            qinq(udp4(PEER_A4, 4000, RELAY4, 30000, RTP).build(), 0x88a8),
            XDP_PASS,
            RelayToUserspace,
        ),
        fx(
            "a third tag is not parsed",
            qinq(
                {
                    let f = invite(OUT4);
                    let mut g = f[..12].to_vec();
                    g.extend(ETH_P_8021Q.to_be_bytes());
                    g.extend(5u16.to_be_bytes());
                    g.extend(&f[12..]);
                    g
                },
                0x88a8,
            ),
            XDP_PASS,
            PassNotIp,
        ),
    ]
}

/// Three new connections a second per source with bursts of three.
fn syn_guard() -> GuardConfig {
    GuardConfig {
        syns: Gcra::per_second(3, 3),
        ..base_guard()
    }
}

fn tcp_flags(src: [u8; 4], flags: u8) -> Vec<u8> {
    let f = Frame::tcp(Ip::V4(src), 40000, Ip::V4(RELAY4), SIP, b"").build();
    with(f, 14 + 20 + 13, &[flags])
}

fn syn_rate_fixtures() -> Vec<Fixture> {
    use Stat::*;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    vec![
        fx(
            "SYNs to SIP within the source's burst",
            tcp_flags(IN4, SYN),
            XDP_PASS,
            PassSip,
        )
        .repeat(3)
        .setup(|e| e.guard_config(syn_guard())),
        fx(
            "the next SYN in the same second is dropped",
            tcp_flags(IN4, SYN),
            XDP_DROP,
            DropTcpSynRate,
        ),
        fx(
            "an established connection's ACKs are not new connections",
            tcp_flags(IN4, ACK | 0x08),
            XDP_PASS,
            PassSip,
        )
        .repeat(10),
        fx(
            "a SYN-ACK is no new connection either",
            tcp_flags(IN4, SYN | ACK),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "another source has its own allowance",
            tcp_flags([192, 0, 2, 11], SYN),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "one interval later one more SYN passes",
            tcp_flags(IN4, SYN),
            XDP_PASS,
            PassSip,
        )
        .setup(|e| {
            let mut st = e.guard_state(Ip::V4(IN4)).unwrap();
            st.syns_tat_ns -= 1_000_000_000 / 3;
            e.set_guard_state(Ip::V4(IN4), st);
        }),
        fx(
            "a SYN from outside the allow list meets the ACL first",
            tcp_flags(OUT4, SYN),
            XDP_DROP,
            DropServiceAcl,
        )
        .after(|e| e.guard_config(base_guard())),
    ]
}

#[test]
fn bypass_fixture_table() {
    tests::require_privileged!();
    let ns = make_netns();
    ns.enter(|| {
        let mut env = Env::new("bypass");
        configure(&mut env);
        restrict_sip(&mut env);
        let all = [
            v4_fragment_fixtures(),
            v6_fragment_fixtures(),
            v6_extension_header_fixtures(),
            qinq_fixtures(),
            syn_rate_fixtures(),
        ]
        .into_iter()
        .flatten()
        .collect();
        run_fixtures(&mut env, all);
    });
}
