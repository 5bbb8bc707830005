//! Upstream connections (vendors): where calls are routed, with their own caps.

use serde::{Deserialize, Serialize};

use super::{Id, Invalid, Record, valid_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub id: Id,
    pub name: String,
    pub enabled: bool,
    /// Host name or address literal; resolved when routing so DNS changes apply.
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// Called-number prefixes routed here; empty routes everything (a default route).
    pub cld_prefixes: Vec<String>,
    #[serde(default)]
    pub max_channels: Option<u32>,
    #[serde(default)]
    pub cps_limit: Option<u32>,
    /// Lower is tried first; equal priorities share by order of name.
    pub priority: u32,
}

impl Record for Connection {
    const KIND: &'static str = "connection";
    const VERSION: u32 = 1;
}

impl Connection {
    pub fn validate(&self) -> Result<(), Invalid> {
        valid_name("connection", &self.name)?;
        let bad = |reason: String| {
            Err(Invalid {
                kind: "connection",
                reason: format!("{}: {reason}", self.name),
            })
        };
        let host_ok = !self.host.is_empty()
            && self.host.len() <= 253
            && (self.host.parse::<std::net::IpAddr>().is_ok()
                || self.host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !host_ok {
            return bad(format!(
                "host {:?} is neither an IP address nor a DNS name",
                self.host
            ));
        }
        if self.port == 0 {
            return bad("port 0".into());
        }
        for p in &self.cld_prefixes {
            if p.is_empty()
                || p.len() > 32
                || !p.chars().all(|c| c.is_ascii_digit() || "+*#".contains(c))
            {
                return bad(format!("CLD prefix {p:?} must be 1-32 of 0-9 + * #"));
            }
        }
        if self.max_channels == Some(0) || self.cps_limit == Some(0) {
            return bad("a cap of 0 would never route; disable the connection instead".into());
        }
        Ok(())
    }
}
