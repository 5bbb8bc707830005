//! Per-CPU verdict counters (`STATS`): every pass, drop and forward has a reason.

macro_rules! stats {
    ($($(#[$m:meta])* $name:ident = $idx:expr, $label:expr;)*) => {
        /// Index into the `STATS` per-CPU array.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Stat { $($(#[$m])* $name = $idx,)* }

        impl Stat {
            /// Every counter, in index order (for metrics and listings).
            pub const ALL: &'static [Stat] = &[$(Stat::$name,)*];
            /// Stable snake_case name for metrics and the API.
            pub const fn name(self) -> &'static str {
                match self { $(Stat::$name => $label,)* }
            }
        }
    };
}

stats! {
    /// Every packet the program saw.
    Received = 0, "received";
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passed.
    PassNotIp = 1, "pass_not_ip";
    /// IP but neither UDP nor TCP (ICMP, ...): passed.
    PassNotUdpTcp = 2, "pass_not_udp_tcp";
    /// A later IPv4/IPv6 fragment (offset > 0) whose datagram's first fragment passed: passed
    /// too, the stack reassembles. (The first fragment is counted by its own verdict.)
    PassFragment = 3, "pass_fragment";
    /// Truncated or malformed header (runt frame, bad IHL, bad lengths): dropped.
    DropMalformed = 4, "drop_malformed";
    /// Source banned and the ban not expired.
    DropBanned = 5, "drop_banned";
    /// Source in the static deny list.
    DropDenied = 6, "drop_denied";
    /// Restricted service and source not in its allow list.
    DropServiceAcl = 7, "drop_service_acl";
    /// SIP packet rate over the per-source limit.
    DropSipPacketRate = 8, "drop_sip_packet_rate";
    /// INVITE rate over the per-source calls-per-second limit.
    DropSipInviteRate = 9, "drop_sip_invite_rate";
    /// INVITE from a source at its concurrent-session cap.
    DropSipSessionCap = 10, "drop_sip_session_cap";
    /// SIP packet that passed the guard (to the SIP daemon).
    PassSip = 11, "pass_sip";
    /// Relay packet sent back out of the ingress interface.
    RelayTx = 12, "relay_tx";
    /// Relay packet redirected to another interface.
    RelayRedirect = 13, "relay_redirect";
    /// Relay packet rewritten for a local destination and passed to the stack.
    RelayLocal = 14, "relay_local";
    /// Relay packet from a source other than the latched peer (strict source).
    DropStrictSource = 15, "drop_strict_source";
    /// Relay packet the kernel could not forward (no route/neighbour, leg incomplete, family
    /// change): passed to the userspace relay.
    RelayToUserspace = 16, "relay_to_userspace";
    /// Packet to no relay port and no service: passed.
    PassOther = 17, "pass_other";
    /// Guard event lost because the ring buffer was full.
    EventLost = 18, "event_lost";
    /// Source in a service's allow list, or service unrestricted: passed on (not SIP).
    PassService = 19, "pass_service";
    /// Relay packet dropped because redirect failed.
    DropRedirectFailed = 20, "drop_redirect_failed";
    /// Relay packet whose destination is one of the relay's own sockets (userspace relay):
    /// dropped, or it would go round forever.
    DropRelayLoop = 21, "drop_relay_loop";
    /// A later fragment whose datagram's first fragment was dropped: dropped too.
    DropFragment = 22, "drop_fragment";
    /// A later fragment with no remembered verdict (out of order, expired, or forged without
    /// a first fragment): dropped, since nothing it carries can be judged.
    DropFragmentUnknown = 23, "drop_fragment_unknown";
    /// A first fragment too short to carry what the firewall judges (the whole TCP header, or
    /// the UDP header and the INVITE detector's window): the tiny-fragment evasion (RFC 1858).
    DropFragmentTiny = 24, "drop_fragment_tiny";
    /// An IPv6 extension-header chain too long to walk (more headers than the bounded walk
    /// takes, or the transport header too deep in the frame): dropped.
    DropIpv6ExtHeaders = 25, "drop_ipv6_ext_headers";
    /// A new TCP connection (SYN) to a SIP port over the source's connection rate.
    DropTcpSynRate = 26, "drop_tcp_syn_rate";
}

/// Size of the `STATS` array; leaves room for new counters without re-creating the map.
pub const STATS_LEN: u32 = 64;
const _: () = assert!(Stat::ALL.len() as u32 <= STATS_LEN);
