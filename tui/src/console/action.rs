//! What components ask the app to do ([`Action`]), what the app asks the daemon
//! ([`Request`]), and what comes back ([`Update`]).

use super::model::{
    Account, Alert, AuditEntry, Ban, Call, CallMessages, Cdr, Connection, FirewallView, LoginOk,
    Me, NeverBan, StaffMember, Status, StreamEvent,
};

/// The screens, in the order of their number keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScreenId {
    /// Mode, capacity, rates, drops, alerts, CDR writer.
    Dashboard,
    /// Live calls and their ladders.
    Calls,
    /// Bans.
    Bans,
    /// Allow and deny lists.
    Firewall,
    /// Accounts and connections against their limits.
    Accounts,
    /// Call records.
    Cdrs,
    /// The audit log.
    Audit,
    /// Alerts.
    Alerts,
    /// Staff (admins).
    Staff,
}

impl ScreenId {
    /// Every screen, in tab order (`1`..).
    pub const ALL: [ScreenId; 9] = [
        ScreenId::Dashboard,
        ScreenId::Calls,
        ScreenId::Bans,
        ScreenId::Firewall,
        ScreenId::Accounts,
        ScreenId::Cdrs,
        ScreenId::Audit,
        ScreenId::Alerts,
        ScreenId::Staff,
    ];

    /// The tab's title.
    pub fn title(self) -> &'static str {
        match self {
            ScreenId::Dashboard => "Dashboard",
            ScreenId::Calls => "Calls",
            ScreenId::Bans => "Bans",
            ScreenId::Firewall => "Firewall",
            ScreenId::Accounts => "Accounts",
            ScreenId::Cdrs => "CDRs",
            ScreenId::Audit => "Audit",
            ScreenId::Alerts => "Alerts",
            ScreenId::Staff => "Staff",
        }
    }

    /// The tab's title on a narrow terminal.
    pub fn short(self) -> &'static str {
        match self {
            ScreenId::Dashboard => "Dash",
            ScreenId::Calls => "Calls",
            ScreenId::Bans => "Bans",
            ScreenId::Firewall => "FW",
            ScreenId::Accounts => "Accts",
            ScreenId::Cdrs => "CDRs",
            ScreenId::Audit => "Audit",
            ScreenId::Alerts => "Alerts",
            ScreenId::Staff => "Staff",
        }
    }

    /// Only admins may open it (the API answers 403 to others).
    pub fn admin_only(self) -> bool {
        matches!(self, ScreenId::Audit | ScreenId::Staff)
    }
}

/// A call to the management API, made by a [`super::source::DataSource`] off the UI thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `POST /api/login`.
    Login {
        /// Staff username.
        username: String,
        /// Password.
        password: String,
        /// The current TOTP code, if the account has one.
        totp: Option<String>,
    },
    /// `GET /api/me` (the role).
    Me,
    /// `GET /api/status`.
    Status,
    /// `GET /api/calls`.
    Calls,
    /// `GET /api/calls/{id}/messages`.
    Messages(u64),
    /// `DELETE /api/calls/{id}`.
    Hangup(u64),
    /// `GET /api/bans`.
    Bans,
    /// `POST /api/bans`.
    Ban {
        /// Address or prefix.
        addr: String,
        /// `None`: permanent.
        duration_secs: Option<u64>,
        /// The operator's note.
        reason: Option<String>,
    },
    /// `DELETE /api/bans/{prefix}`.
    Unban(String),
    /// `GET /api/bans/never`.
    NeverBans,
    /// `GET /api/alerts`.
    Alerts,
    /// `POST /api/alerts/{id}/ack`.
    AckAlert(String),
    /// `GET /api/firewall`.
    Firewall,
    /// `POST /api/firewall/allow`.
    AllowAdd {
        /// Service name.
        service: String,
        /// Prefix.
        cidr: String,
    },
    /// `DELETE /api/firewall/allow`.
    AllowRemove {
        /// Service name.
        service: String,
        /// Prefix.
        cidr: String,
    },
    /// `POST /api/firewall/deny`.
    DenyAdd(String),
    /// `DELETE /api/firewall/deny/{id}`.
    DenyRemove(u64),
    /// `GET /api/accounts` and `GET /api/connections`.
    Accounts,
    /// `GET /api/cdrs` with the CDR screen's filters.
    Cdrs(CdrQuery),
    /// `GET /api/staff`.
    Staff,
    /// `POST /api/staff`: a new staff user, who must change the password at first login.
    StaffCreate {
        /// Username.
        username: String,
        /// `admin`, `operator` or `read-only`.
        role: String,
        /// The first password; `None`: the console makes a random one and shows it once.
        password: Option<String>,
        /// Where from they may log in (addresses or prefixes); empty: anywhere.
        allowed_hosts: Vec<String>,
    },
    /// `PUT /api/staff/{id}`: a new role, or enabled/disabled.
    StaffUpdate {
        /// The user's id.
        id: u64,
        /// Their username (for the notice).
        username: String,
        /// A new role.
        role: Option<String>,
        /// Enable (`true`) or disable.
        enabled: Option<bool>,
    },
    /// `POST /api/staff/{id}/revoke`: ends every session of the user.
    StaffRevoke {
        /// The user's id.
        id: u64,
        /// Their username (for the notice).
        username: String,
    },
    /// `POST /api/staff/{id}/totp/reset`: removes the user's TOTP factor.
    StaffTotpReset {
        /// The user's id.
        id: u64,
        /// Their username (for the notice).
        username: String,
    },
    /// `GET /api/audit?after=`.
    Audit {
        /// Only entries after this id.
        after: u64,
    },
}

impl Request {
    /// Whether it only reads: asking again while the answer is coming changes nothing.
    pub fn is_read(&self) -> bool {
        !matches!(
            self,
            Request::Login { .. }
                | Request::Hangup(_)
                | Request::Ban { .. }
                | Request::Unban(_)
                | Request::AckAlert(_)
                | Request::AllowAdd { .. }
                | Request::AllowRemove { .. }
                | Request::DenyAdd(_)
                | Request::DenyRemove(_)
                | Request::StaffCreate { .. }
                | Request::StaffUpdate { .. }
                | Request::StaffRevoke { .. }
                | Request::StaffTotpReset { .. }
        )
    }

    /// Whether `other` reads the same thing (the audit log's reads are one, whatever
    /// entry they start after: the answer to the first one moves the start).
    pub fn same_read(&self, other: &Request) -> bool {
        match (self, other) {
            (Request::Audit { .. }, Request::Audit { .. }) => true,
            (a, b) => a.is_read() && a == b,
        }
    }
}

/// The CDR screen's filters, sent as `GET /api/cdrs`'s query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrQuery {
    /// Only this account's calls (`account`).
    pub account: Option<u64>,
    /// `answered`, `failed` or a SIP status code (`result`).
    pub result: Option<String>,
    /// Calls started in the last this many seconds (`from_ms` = now − window, taken when
    /// the request is made); ignored when `from_ms` is given.
    pub window_secs: Option<u64>,
    /// Calls started at or after (Unix ms).
    pub from_ms: Option<u64>,
    /// Calls started before (Unix ms).
    pub to_ms: Option<u64>,
}

impl Default for CdrQuery {
    /// The last hour, every account and result.
    fn default() -> Self {
        CdrQuery {
            account: None,
            result: None,
            window_secs: Some(3600),
            from_ms: None,
            to_ms: None,
        }
    }
}

/// A staff user just made (`POST /api/staff`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffCreated {
    /// The username.
    pub username: String,
    /// The role.
    pub role: String,
    /// The password the console made, shown once; `None` when the admin typed one.
    pub password: Option<String>,
    /// The server's strength estimate (`score/4` and its warning).
    pub strength: String,
}

/// A successful reply, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Logged in.
    LoggedIn(LoginOk),
    /// Who is logged in.
    Me(Me),
    /// Status.
    Status(Status),
    /// Live calls.
    Calls(Vec<Call>),
    /// One call's SIP messages.
    Messages(CallMessages),
    /// Bans.
    Bans(Vec<Ban>),
    /// The sources the IDS spares.
    NeverBans(Vec<NeverBan>),
    /// Alerts.
    Alerts(Vec<Alert>),
    /// Audit entries.
    Audit(Vec<AuditEntry>),
    /// The firewall.
    Firewall(FirewallView),
    /// Accounts and upstream connections.
    Accounts(Vec<Account>, Vec<Connection>),
    /// The latest CDRs.
    Cdrs(Vec<Cdr>),
    /// Staff.
    Staff(Vec<StaffMember>),
    /// A staff user was made.
    StaffCreated(StaffCreated),
    /// A change that returns nothing the console needs (hang-up, unban, ban, ack).
    Done,
}

/// Why a request failed, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status, when the API answered.
    pub status: Option<u16>,
    /// One line for the user.
    pub message: String,
}

impl Failure {
    /// The session is gone or was never there: back to the login screen.
    pub fn needs_login(&self) -> bool {
        self.status == Some(401)
    }

    /// The role does not allow it.
    pub fn forbidden(&self) -> bool {
        self.status == Some(403)
    }
}

/// The state of the link to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not tried yet (no session).
    Idle,
    /// The event stream is open.
    Connected,
    /// The event stream is down; it is retried by itself.
    Disconnected(String),
    /// The daemon answers but has no event stream (a `sipd` older than the console): the
    /// screen in front is reloaded every few seconds instead.
    Polling,
}

/// What a data source hands back to the UI thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The answer to a request.
    Reply(Request, Result<Reply, Failure>),
    /// One event of the stream.
    Event(StreamEvent),
    /// The stream's state changed.
    Link(Link),
}

/// What a component asks the app to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Leave the console.
    Quit,
    /// Show a screen.
    Show(ScreenId),
    /// The next or previous screen.
    Cycle(bool),
    /// Show or hide the help.
    ToggleHelp,
    /// Freeze or thaw the live view.
    TogglePause,
    /// Ask the daemon.
    Send(Request),
    /// Ask the user first; `Send` the request on yes.
    Confirm {
        /// The question, `y` to confirm.
        prompt: String,
        /// What happens on yes.
        request: Request,
    },
    /// Acknowledge an alert (by id) on the daemon, for every console.
    Ack(String),
    /// A line in the status bar.
    Notice(String),
}
