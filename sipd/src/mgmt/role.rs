//! What each role may do, and what a limited (setup) session may do.

use serde::{Deserialize, Serialize};

use crate::store::{Role, SessionScope};

/// Everything the management API does, at the granularity roles are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Read configuration, live calls, CDRs, counters, bans, alerts.
    View,
    /// Accounts, auth rules, tariffs, balance top-ups, upstream connections.
    Provision,
    /// Hang up live calls, add and remove bans.
    Operate,
    /// Service firewall rules, TLS certificate, anything that can lock everyone out.
    System,
    /// List staff users (no secrets).
    ViewStaff,
    /// Create, change, delete staff; reset their TOTP or password; revoke their sessions.
    ManageStaff,
    /// Read the audit log.
    ViewAudit,
    /// Change one's own password.
    OwnPassword,
    /// Enrol one's own TOTP factor.
    OwnTotp,
    /// Who am I, log out: always allowed to a valid session.
    OwnSession,
}

impl Role {
    /// The role matrix. Everyone may look after their own login; read-only may look;
    /// operators may also provision and operate; only admins touch the system, staff and
    /// the audit log.
    pub fn can(self, a: Action) -> bool {
        use Action::*;
        match a {
            OwnPassword | OwnTotp | OwnSession | View => true,
            Provision | Operate => matches!(self, Role::Admin | Role::Operator),
            System | ViewStaff | ManageStaff | ViewAudit => self == Role::Admin,
        }
    }
}

impl SessionScope {
    /// Whether a session of this scope may do `a` (on top of the role's say).
    pub fn allows(self, a: Action) -> bool {
        match self {
            SessionScope::Full => true,
            SessionScope::Setup {
                enrol_totp,
                change_password,
            } => match a {
                Action::OwnSession => true,
                Action::OwnTotp => enrol_totp,
                Action::OwnPassword => change_password,
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Action; 10] = [
        Action::View,
        Action::Provision,
        Action::Operate,
        Action::System,
        Action::ViewStaff,
        Action::ManageStaff,
        Action::ViewAudit,
        Action::OwnPassword,
        Action::OwnTotp,
        Action::OwnSession,
    ];

    #[test]
    fn matrix() {
        let allowed = |r: Role| ALL.iter().filter(|&&a| r.can(a)).count();
        assert_eq!(allowed(Role::Admin), ALL.len());
        assert!(Role::Operator.can(Action::Provision) && Role::Operator.can(Action::Operate));
        assert!(!Role::Operator.can(Action::ManageStaff));
        assert!(!Role::Operator.can(Action::System));
        assert!(!Role::Operator.can(Action::ViewAudit));
        assert!(Role::ReadOnly.can(Action::View));
        assert!(!Role::ReadOnly.can(Action::Provision));
        assert!(!Role::ReadOnly.can(Action::Operate));
        assert_eq!(allowed(Role::ReadOnly), 4);
    }

    #[test]
    fn setup_scope_allows_only_setup() {
        let s = SessionScope::setup(true, false);
        assert!(s.allows(Action::OwnTotp) && s.allows(Action::OwnSession));
        assert!(!s.allows(Action::OwnPassword) && !s.allows(Action::View));
        let s = SessionScope::setup(false, true);
        assert!(s.allows(Action::OwnPassword) && !s.allows(Action::OwnTotp));
        assert_eq!(SessionScope::setup(false, false), SessionScope::Full);
        assert!(ALL.iter().all(|&a| SessionScope::Full.allows(a)));
    }
}
