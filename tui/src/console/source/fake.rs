//! A data source with canned replies, for tests and for looking at screens without a daemon.

use std::collections::VecDeque;

use crate::console::action::{Failure, Reply, Request, Update};

/// How a fake answers a request.
pub type Answer = Box<dyn FnMut(&Request) -> Result<Reply, Failure> + Send>;

/// Answers each request with the reply `answer` gives, and lets a test push stream events.
pub struct FakeSource {
    answer: Answer,
    queued: VecDeque<Update>,
    /// Every request sent, in order.
    pub sent: Vec<Request>,
}

impl FakeSource {
    /// A source that answers with `answer`.
    pub fn new(answer: impl FnMut(&Request) -> Result<Reply, Failure> + Send + 'static) -> Self {
        FakeSource {
            answer: Box::new(answer),
            queued: VecDeque::new(),
            sent: Vec::new(),
        }
    }

    /// A source that fails every request the same way (a daemon that is down).
    pub fn failing(message: &str) -> Self {
        let message = message.to_owned();
        FakeSource::new(move |_| {
            Err(Failure {
                status: None,
                message: message.clone(),
            })
        })
    }

    /// Delivers `u` on the next poll.
    pub fn push(&mut self, u: Update) {
        self.queued.push_back(u);
    }
}

impl super::DataSource for FakeSource {
    fn send(&mut self, req: Request) {
        let r = (self.answer)(&req);
        self.sent.push(req.clone());
        self.queued.push_back(Update::Reply(req, r));
    }

    fn poll(&mut self) -> Vec<Update> {
        self.queued.drain(..).collect()
    }
}
