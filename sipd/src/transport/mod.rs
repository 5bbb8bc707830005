//! SIP transports: UDP sockets, TCP listeners and connections, stream framing.
