//! Upstream host names, looked up off the call core's thread.
//!
//! The core asks with [`Effect::Resolve`](sipd_core::b2bua::Effect::Resolve) and keeps each
//! answer for as long as this says it is good: the DNS records' TTL, as the stub resolver
//! (hickory, reading `/etc/resolv.conf` and `/etc/hosts`, with its own bounded cache) reports
//! it. Where no resolver can be configured, the system's `getaddrinfo` answers instead, with
//! a fixed lifetime since it reports no TTL. Every question gets an answer, empty on failure or
//! after [`TIMEOUT`], so no call waits for ever.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// One DNS query's wait, and how many times it is tried: a lost UDP packet costs a second,
/// not the name.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
const QUERY_ATTEMPTS: usize = 2;
/// Longest a look-up may take before it counts as failed: above the queries' own retries.
pub const TIMEOUT: Duration = Duration::from_secs(4);
/// How long a failed look-up is kept before the name is asked for again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How long a `getaddrinfo` answer is kept (it carries no TTL).
pub const FALLBACK_TTL: Duration = Duration::from_secs(30);
/// Answers waiting for the core; questions are one per upstream name, so this is ample.
const QUEUE: usize = 256;

/// One name's addresses (empty: it does not resolve) and how long they are good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The name asked for, as the connection spells it.
    pub host: String,
    /// Its addresses (IPv6 only when it has no IPv4 address, through DNS); empty when it did
    /// not resolve in time.
    pub addrs: Vec<IpAddr>,
    /// How long the core may use the answer: the records' TTL, [`NEGATIVE_TTL`] after a failure,
    /// [`FALLBACK_TTL`] from `getaddrinfo`, a day for an address literal.
    pub ttl: Duration,
}

#[derive(Clone)]
enum Backend {
    Dns(Box<TokioResolver>),
    System,
}

/// Looks up upstream names for the event loop: cheap to clone, each look-up a task of its
/// own, answers sent to the receiver [`Resolver::from_system`] returned.
#[derive(Clone)]
pub struct Resolver {
    backend: Backend,
    answers: mpsc::Sender<Answer>,
}

impl Resolver {
    /// A resolver from the system's configuration, and where its answers arrive.
    pub fn from_system() -> (Resolver, mpsc::Receiver<Answer>) {
        let built = TokioResolver::builder_tokio().and_then(|mut b| {
            let o = b.options_mut();
            o.timeout = QUERY_TIMEOUT;
            o.attempts = QUERY_ATTEMPTS;
            // A first, AAAA only when there is no A: a server that never answers AAAA must
            // not cost an IPv4 upstream its name, and IPv4 stays preferred as getaddrinfo's
            // order made it.
            o.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4thenIpv6;
            b.build()
        });
        let backend = match built {
            Ok(r) => Backend::Dns(Box::new(r)),
            Err(e) => {
                warn!(error = %e, "no DNS resolver configuration; upstream names go through getaddrinfo without TTLs");
                Backend::System
            }
        };
        let (answers, rx) = mpsc::channel(QUEUE);
        (Resolver { backend, answers }, rx)
    }

    /// Looks `host` up in the background; the answer arrives on the receiver.
    pub fn ask(&self, host: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let answer = me.lookup(host).await;
            // The receiver is gone only when sipd is stopping.
            let _ = me.answers.send(answer).await;
        });
    }

    /// Looks every name up at once (at start, before calls arrive).
    pub async fn lookup_all(&self, hosts: Vec<String>) -> Vec<Answer> {
        let mut set = tokio::task::JoinSet::new();
        for h in hosts {
            let me = self.clone();
            set.spawn(async move { me.lookup(h).await });
        }
        let mut out = Vec::new();
        while let Some(a) = set.join_next().await {
            if let Ok(a) = a {
                out.push(a);
            }
        }
        out
    }

    /// Looks `host` up now.
    pub async fn lookup(&self, host: String) -> Answer {
        let started = Instant::now();
        let result = tokio::time::timeout(TIMEOUT, self.query(&host)).await;
        let (addrs, ttl) = match result {
            Ok(Ok((addrs, ttl))) if !addrs.is_empty() => (addrs, ttl),
            Ok(Ok(_)) => (Vec::new(), NEGATIVE_TTL),
            Ok(Err(error)) => {
                warn!(%host, %error, "upstream name does not resolve");
                (Vec::new(), NEGATIVE_TTL)
            }
            Err(_) => {
                warn!(%host, timeout = ?TIMEOUT, "upstream name look-up timed out");
                (Vec::new(), NEGATIVE_TTL)
            }
        };
        debug!(%host, ?addrs, ?ttl, took = ?started.elapsed(), "resolved");
        Answer { host, addrs, ttl }
    }

    async fn query(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok((vec![ip], Duration::from_secs(86_400)));
        }
        match &self.backend {
            Backend::Dns(r) => {
                let l = r.lookup_ip(host).await.map_err(|e| e.to_string())?;
                let ttl = l.valid_until().saturating_duration_since(Instant::now());
                Ok((l.iter().collect(), ttl))
            }
            Backend::System => {
                let addrs = tokio::net::lookup_host((host, 0))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((addrs.map(|a| a.ip()).collect(), FALLBACK_TTL))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_hosts_file_names_resolve_and_unknown_names_answer_empty() {
        let (r, _rx) = Resolver::from_system();
        let a = r.lookup("192.0.2.1".into()).await;
        assert_eq!(a.addrs, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        let l = r.lookup("localhost".into()).await;
        assert!(
            l.addrs.iter().all(|ip| ip.is_loopback()) && !l.addrs.is_empty(),
            "{l:?}"
        );
        // `.invalid` never resolves (RFC 6761) and the DNS resolver answers it without
        // asking anyone (getaddrinfo would ask the network: not from a test); a failure is
        // kept only briefly.
        if matches!(r.backend, Backend::Dns(_)) {
            let n = r.lookup("upstream.invalid.".into()).await;
            assert!(n.addrs.is_empty());
            assert_eq!(n.ttl, NEGATIVE_TTL);
        }
    }

    #[tokio::test]
    async fn asked_names_are_answered_on_the_channel() {
        let (r, mut rx) = Resolver::from_system();
        r.ask("127.0.0.1".into());
        let a = tokio::time::timeout(TIMEOUT * 2, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.host, "127.0.0.1");
        assert_eq!(a.addrs, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }
}
