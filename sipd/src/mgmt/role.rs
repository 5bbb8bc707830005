//! What each role may do, and what a limited (setup) session may do.

use serde::{Deserialize, Serialize};

use crate::store::{Id, Role, SessionScope};

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
            OwnPassword | OwnTotp | OwnSession => true,
            // A customer's looks and hang-ups are decided with the account they touch
            // (`Role::decide`); on their own they are staff's.
            View => self != Role::Customer,
            Provision | Operate => matches!(self, Role::Admin | Role::Operator),
            System | ViewStaff | ManageStaff | ViewAudit => self == Role::Admin,
        }
    }
}

/// Where an endpoint's data belongs, as the route table states it for each endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The whole system (staff, firewall, bans, tariffs, connections, status, alerts, metrics,
    /// the audit log, event streams): staff only.
    System,
    /// The caller's own login (who am I, log out, own password, own TOTP).
    Own,
    /// One account's data; the account is taken from the request as stated.
    Account(AccountFrom),
    /// A list across accounts (accounts, live calls, CDRs): a customer's is narrowed to its
    /// own account by the handler, through [`Visible`].
    PerAccount,
}

/// How an account-scoped endpoint's account is taken from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountFrom {
    /// The path's `{id}` is the account's id.
    PathAccount,
    /// The path's `{id}` is an auth rule's: its account.
    PathRule,
    /// The path's `{id}` is a live call's: the account it was admitted for.
    PathCall,
}

/// A [`Scope`] with the account looked up for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// See [`Scope::System`].
    System,
    /// See [`Scope::Own`].
    Own,
    /// The account the request touches; `None` when the record does not exist.
    Account(Option<Id>),
    /// See [`Scope::PerAccount`].
    PerAccount,
}

/// What a permitted request may see of lists across accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visible {
    /// Everything (staff).
    All,
    /// This account's records only (a customer).
    Account(Id),
}

impl Visible {
    /// Whether a record of `account` (`None`: of no account) may be shown.
    pub fn shows(self, account: Option<Id>) -> bool {
        match self {
            Visible::All => true,
            Visible::Account(a) => account == Some(a),
        }
    }

    /// The account a customer is confined to; `None` for staff.
    pub fn account(self) -> Option<Id> {
        match self {
            Visible::All => None,
            Visible::Account(a) => Some(a),
        }
    }
}

/// Why [`Role::decide`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The role may not do this here (403).
    Forbidden,
    /// A customer asked for another account's record: answered like a missing one (404), so
    /// ids of other accounts cannot be probed.
    OtherAccount,
}

impl Role {
    /// The one decision on a request: may this role, confined to `customer_of` (customers
    /// only), do `a` on `t`; and what of lists it may see. Staff follow [`Role::can`] on
    /// every target. A customer may look after its own login, look at its own account's
    /// records (and lists narrowed to them), and hang up its own account's calls: nothing
    /// system-wide, nothing of other accounts, never provision.
    pub fn decide(self, customer_of: Option<Id>, a: Action, t: Target) -> Result<Visible, Refused> {
        use Action::*;
        let Some(mine) = customer_of.filter(|_| self == Role::Customer) else {
            if self == Role::Customer {
                // A customer record without an account is refused everything.
                return Err(Refused::Forbidden);
            }
            return if self.can(a) {
                Ok(Visible::All)
            } else {
                Err(Refused::Forbidden)
            };
        };
        let mine_only = Visible::Account(mine);
        match (a, t) {
            (OwnPassword | OwnTotp | OwnSession, Target::Own) => Ok(mine_only),
            (View, Target::PerAccount) => Ok(mine_only),
            (View | Operate, Target::Account(Some(x))) if x == mine => Ok(mine_only),
            (View | Operate, Target::Account(_)) => Err(Refused::OtherAccount),
            _ => Err(Refused::Forbidden),
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

    pub(crate) const ALL: [Action; 10] = [
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
        assert_eq!(allowed(Role::Customer), 3, "only its own login, alone");
    }

    #[test]
    fn customers_reach_only_their_account() {
        let c = |a, t| Role::Customer.decide(Some(7), a, t);
        let mine = Ok(Visible::Account(7));
        assert_eq!(c(Action::View, Target::Account(Some(7))), mine);
        assert_eq!(c(Action::Operate, Target::Account(Some(7))), mine);
        assert_eq!(c(Action::View, Target::PerAccount), mine);
        assert_eq!(c(Action::OwnPassword, Target::Own), mine);
        assert_eq!(
            c(Action::Operate, Target::Account(Some(8))),
            Err(Refused::OtherAccount)
        );
        assert_eq!(
            c(Action::View, Target::Account(None)),
            Err(Refused::OtherAccount)
        );
        for a in ALL {
            assert_eq!(c(a, Target::System), Err(Refused::Forbidden), "{a:?}");
        }
        for a in [
            Action::Provision,
            Action::System,
            Action::ManageStaff,
            Action::ViewAudit,
        ] {
            assert_eq!(
                c(a, Target::Account(Some(7))),
                Err(Refused::Forbidden),
                "{a:?}"
            );
        }
        assert_eq!(
            Role::Customer.decide(None, Action::OwnSession, Target::Own),
            Err(Refused::Forbidden)
        );
        // Staff: the matrix, whatever the target; an account on a staff record is ignored.
        let v = Role::ReadOnly.decide(None, Action::View, Target::Account(Some(8)));
        assert_eq!(v, Ok(Visible::All));
        assert_eq!(
            Role::ReadOnly.decide(Some(8), Action::Operate, Target::Account(Some(8))),
            Err(Refused::Forbidden)
        );
        assert!(Visible::Account(7).shows(Some(7)) && !Visible::Account(7).shows(None));
        assert!(Visible::All.shows(None));
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
