//! The seam between the screens and the daemon. The UI thread never waits on it:
//! [`DataSource::send`] queues a request and returns, [`DataSource::poll`] hands over what
//! has arrived since (replies, stream events, link changes).

pub mod fake;
pub mod http;

use super::action::{Request, Update};

/// Where the console's data comes from: the daemon over HTTPS ([`http::HttpSource`]) or
/// canned data in tests ([`fake::FakeSource`]).
pub trait DataSource {
    /// Queues a request; its reply arrives later through [`DataSource::poll`].
    fn send(&mut self, req: Request);
    /// Everything that arrived since the last call, oldest first; never blocks.
    fn poll(&mut self) -> Vec<Update>;
}
