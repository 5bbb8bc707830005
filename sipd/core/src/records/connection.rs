//! Upstream connections (vendors): where calls are routed, with their own caps.

use serde::{Deserialize, Serialize};

use super::field::{check_name, check_nonzero, yes};
use super::{FieldError, FieldErrors, Id, Invalid, Record};

/// SIP transport to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS.
    Tls,
}

/// An upstream (vendor) calls are routed to, with its own caps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// 0 until stored.
    pub id: Id,
    /// Unique among connections; shown in logs and the console.
    pub name: String,
    /// A disabled connection is never routed to.
    pub enabled: bool,
    /// Host name or address literal; resolved when routing so DNS changes apply.
    pub host: String,
    /// SIP port at `host`, never 0.
    pub port: u16,
    /// How SIP reaches it.
    pub transport: Transport,
    /// Called-number prefixes routed here; empty routes everything (a default route).
    pub cld_prefixes: Vec<String>,
    /// Calls in progress to it at once; `None` is unlimited (0 is refused).
    #[serde(default)]
    pub max_channels: Option<u32>,
    /// New calls per second to it; `None` is unlimited (0 is refused).
    #[serde(default)]
    pub cps_limit: Option<u32>,
    /// Lower is tried first; equal priorities share by order of name.
    pub priority: u32,
    /// Over TLS: the name the vendor's certificate must carry, when not `host` (a vendor
    /// reached by address whose certificate names it). `None`: `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_name: Option<String>,
}

impl Record for Connection {
    const KIND: &'static str = "connection";
    const VERSION: u32 = 1;
}

impl Connection {
    /// Every broken rule, by field (`host` and `port` are the input's `destination`).
    pub fn problems(&self) -> FieldErrors {
        let mut p = FieldErrors::default();
        check_name(&mut p, &self.name);
        if !is_host(&self.host) {
            p.add(
                "destination",
                format!(
                    "host {:?} is neither an IP address nor a DNS name",
                    self.host
                ),
            );
        } else if self.port == 0 {
            p.add("destination", "port 0");
        }
        if let Some(n) = &self.tls_name
            && !is_host(n)
        {
            p.add(
                "tls_name",
                format!("{n:?} is neither an IP address nor a DNS name"),
            );
        }
        for (n, c) in self.cld_prefixes.iter().enumerate() {
            if c.is_empty()
                || c.len() > 32
                || !c.chars().all(|c| c.is_ascii_digit() || "+*#".contains(c))
            {
                p.add(
                    format!("cld_prefixes[{n}]"),
                    format!("{c:?} must be 1-32 of 0-9 + * #"),
                );
            }
        }
        check_nonzero(&mut p, "max_channels", self.max_channels);
        check_nonzero(&mut p, "cps_limit", self.cps_limit);
        p
    }

    /// The first of [`Connection::problems`], as the record's error.
    pub fn validate(&self) -> Result<(), Invalid> {
        Invalid::first("connection", self.problems())
    }

    /// `host:port`, with brackets around an IPv6 address: the input's `destination`.
    pub fn destination(&self) -> String {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// An IP address literal or a DNS name.
pub(crate) fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && (h.parse::<std::net::IpAddr>().is_ok()
            || h.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

/// `host`, `host:port`, `a.b.c.d[:port]` or `[v6]:port`; the port defaults to 5060.
pub fn parse_destination(d: &str) -> Result<(String, u16), String> {
    let bad = || format!("{d:?} is not host, host:port or [v6]:port");
    if let Ok(sa) = d.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = d.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), 5060));
    }
    match d.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port.parse::<u16>().map_err(|_| bad())?;
            Ok((host.to_owned(), port))
        }
        Some(_) => Err(bad()),
        None => Ok((d.to_owned(), 5060)),
    }
}

fn udp() -> Transport {
    Transport::Udp
}
fn default_priority() -> u32 {
    100
}

/// An upstream connection as the API and the provisioning file write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// Unique among connections; an import upserts by it.
    pub name: String,
    /// Defaults to `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `host`, `host:port`, `a.b.c.d:port` or `[v6]:port`; port defaults to 5060.
    pub destination: String,
    /// Defaults to UDP.
    #[serde(default = "udp")]
    pub transport: Transport,
    /// Called-number prefixes routed here (1-32 of `0-9+*#` each); empty routes everything.
    #[serde(default)]
    pub cld_prefixes: Vec<String>,
    /// Calls in progress to it at once; absent: unlimited.
    #[serde(default)]
    pub max_channels: Option<u32>,
    /// New calls per second to it; absent: unlimited.
    #[serde(default)]
    pub cps_limit: Option<u32>,
    /// Lower is tried first; defaults to 100.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Over TLS: the name the vendor's certificate must carry; absent: the destination's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_name: Option<String>,
}

impl ConnectionSpec {
    /// The connection with id `id` (0 for a new one), or every problem by field.
    pub fn build(&self, id: Id) -> Result<Connection, FieldErrors> {
        let mut p = FieldErrors::default();
        let (host, port) = p
            .take(
                parse_destination(&self.destination).map_err(|e| FieldError::new("destination", e)),
            )
            .unwrap_or_else(|| ("invalid".into(), 5060));
        let c = Connection {
            id,
            name: self.name.clone(),
            enabled: self.enabled,
            host,
            port,
            transport: self.transport,
            cld_prefixes: self.cld_prefixes.clone(),
            max_channels: self.max_channels,
            cps_limit: self.cps_limit,
            priority: self.priority,
            tls_name: self.tls_name.clone(),
        };
        p.0.extend(c.problems().0);
        p.or(c)
    }
}

impl From<&Connection> for ConnectionSpec {
    fn from(c: &Connection) -> ConnectionSpec {
        ConnectionSpec {
            name: c.name.clone(),
            enabled: c.enabled,
            destination: c.destination(),
            transport: c.transport,
            cld_prefixes: c.cld_prefixes.clone(),
            max_channels: c.max_channels,
            cps_limit: c.cps_limit,
            priority: c.priority,
            tls_name: c.tls_name.clone(),
        }
    }
}
