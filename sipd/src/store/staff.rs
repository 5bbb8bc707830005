//! Staff users: the people who run the appliance through the management API.
//!
//! Usernames are unique without regard to case (the index holds the lowercase form), so
//! `Admin` and `admin` cannot be two people. The record holds the Argon2id PHC string (never
//! the password) and the TOTP secret as is (see `mgmt::totp`).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Id, Record, Store, StoreError, T, Tx, TxResult, abort};

/// What a staff user may do; `Role::can` (in `mgmt::role`) holds the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything: staff, system settings (service firewall, TLS), the audit log.
    Admin,
    /// Provisioning (accounts, rules, tariffs, connections) and operating (hang-ups, bans).
    Operator,
    /// Looks only (and looks after its own login).
    ReadOnly,
    /// A customer's web user: sees only its own account (see [`Staff::account`]), never
    /// staff, the firewall or the audit log.
    Customer,
}

impl Role {
    /// The role's name as the API, the CLI and the audit log spell it (`admin`, `operator`,
    /// `read-only`); `FromStr` reads it back.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::ReadOnly => "read-only",
            Role::Customer => "customer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "read-only" | "readonly" | "read_only" => Ok(Role::ReadOnly),
            "customer" => Ok(Role::Customer),
            _ => Err(format!(
                "unknown role {s:?} (admin, operator, read-only or customer)"
            )),
        }
    }
}

/// A user's TOTP second factor.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpState {
    /// The shared secret, base32 (RFC 4648, no padding), stored as is: the authenticator
    /// app has the same bytes, so hashing is not possible.
    pub secret: String,
    /// False between enrolment and the first code that proves the app has the secret.
    pub enrolled: bool,
    /// The last time step (Unix seconds / 30) accepted: a code for this step or an earlier
    /// one is refused (RFC 6238 §5.2, no replay).
    pub last_step: u64,
}

impl std::fmt::Debug for TotpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpState")
            .field("secret", &"<redacted>")
            .field("enrolled", &self.enrolled)
            .field("last_step", &self.last_step)
            .finish()
    }
}

/// How a stored password hash was made, so old hashes keep verifying after an upgrade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashFormat {
    /// Argon2id with salt and pepper only: every record stored before seasoning; upgraded
    /// at the user's next successful login.
    #[default]
    Plain,
    /// Also seasoned with the user's identity (Argon2 associated data: SHA-256 of the email
    /// or, without one, the username; see `mgmt::password::seasoning`).
    Seasoned,
}

/// A staff user as stored: identity, role, credentials (hash and TOTP, never the password),
/// where they may log in from, and the epoch that revokes their sessions.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staff {
    /// 0 until stored.
    pub id: Id,
    /// The login name, as typed at creation; unique without regard to case (see
    /// [`username_key`]).
    pub username: String,
    /// What the user may do.
    pub role: Role,
    /// Argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), peppered.
    pub password_hash: String,
    /// Unix ms of the last password change; the policy's maximum age counts from here.
    pub password_changed_ms: u64,
    /// Set when an admin chose the password (creation, reset): the next login may only
    /// change it.
    #[serde(default)]
    pub must_change_password: bool,
    /// The TOTP factor, `None` until enrolment starts (admins must enrol before working).
    #[serde(default)]
    pub totp: Option<TotpState>,
    /// Sources this user may log in and make requests from; empty = anywhere.
    #[serde(default)]
    pub allowed_hosts: Vec<IpNet>,
    /// False blocks logins and every request of the user's open sessions.
    pub enabled: bool,
    /// When the user was created (Unix ms).
    pub created_ms: u64,
    /// Sessions carry the epoch they were made in; bumping it revokes them all at once
    /// (logout everywhere, password change, role change, disable).
    #[serde(default)]
    pub session_epoch: u64,
    /// The account a `customer` user belongs to (its only scope); `None` for staff. Records
    /// stored before customers existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<Id>,
    /// Where email one-time codes (and nothing else) are sent; lowercase domain (see
    /// [`normalize_email`]). Seasons the password hash when set.
    #[serde(default)]
    pub email: Option<String>,
    /// Which format `password_hash` is in (absent in records stored before: `Plain`).
    #[serde(default)]
    pub hash_format: HashFormat,
    /// The user's second factor is a code sent to `email` at login (when their role may use
    /// email codes and no TOTP factor is enrolled, which takes precedence).
    #[serde(default)]
    pub email_codes: bool,
}

impl std::fmt::Debug for Staff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staff")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .field("password_changed_ms", &self.password_changed_ms)
            .field("must_change_password", &self.must_change_password)
            .field("totp", &self.totp)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("enabled", &self.enabled)
            .field("created_ms", &self.created_ms)
            .field("session_epoch", &self.session_epoch)
            .field("account", &self.account)
            .field("email", &self.email)
            .field("hash_format", &self.hash_format)
            .field("email_codes", &self.email_codes)
            .finish()
    }
}

impl Record for Staff {
    const KIND: &'static str = "staff";
    const VERSION: u32 = 1;
}

/// Most CIDRs a user may be limited to; more is a configuration mistake.
pub const MAX_ALLOWED_HOSTS: usize = 64;

impl Staff {
    /// Whether `ip` is one of the user's allowed hosts (an empty list allows any).
    /// IPv4-mapped IPv6 sources are compared as IPv4.
    pub fn host_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.allowed_hosts.is_empty() || self.allowed_hosts.iter().any(|n| n.contains(&ip))
    }

    /// The account this user is confined to: `Some` exactly for a `customer`.
    pub fn customer_of(&self) -> Option<Id> {
        match self.role {
            Role::Customer => self.account,
            _ => None,
        }
    }

    /// Whether the user has a TOTP factor that has been confirmed.
    pub fn totp_enrolled(&self) -> bool {
        self.totp.as_ref().is_some_and(|t| t.enrolled)
    }

    /// The record's own rules: a valid username, an Argon2id PHC hash, at most
    /// [`MAX_ALLOWED_HOSTS`] allowed hosts and a well-formed TOTP secret; `Invalid` otherwise.
    /// Checked on every write.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |reason: String| StoreError::Invalid {
            kind: "staff",
            reason,
        };
        valid_username(&self.username).map_err(bad)?;
        match (self.role, self.account) {
            (Role::Customer, None) => {
                return Err(bad(format!(
                    "{}: a customer user needs an account",
                    self.username
                )));
            }
            (Role::Admin | Role::Operator | Role::ReadOnly, Some(_)) => {
                return Err(bad(format!(
                    "{}: only a customer user belongs to an account",
                    self.username
                )));
            }
            _ => {}
        }
        if !self.password_hash.starts_with("$argon2id$") {
            return Err(bad(format!(
                "{}: password_hash is not an Argon2id PHC string",
                self.username
            )));
        }
        if let Some(e) = &self.email
            && normalize_email(e).as_deref() != Ok(e.as_str())
        {
            return Err(bad(format!(
                "{}: email {e:?} is not a normalized address",
                self.username
            )));
        }
        if self.email_codes && self.email.is_none() {
            return Err(bad(format!(
                "{}: email codes need an email address",
                self.username
            )));
        }
        if self.allowed_hosts.len() > MAX_ALLOWED_HOSTS {
            return Err(bad(format!(
                "{}: at most {MAX_ALLOWED_HOSTS} allowed hosts",
                self.username
            )));
        }
        if let Some(t) = &self.totp {
            let ok = t.secret.len() >= 26
                && t.secret.len() <= 128
                && t.secret
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
            if !ok {
                return Err(bad(format!(
                    "{}: TOTP secret must be 128-640 bits of unpadded base32",
                    self.username
                )));
            }
        }
        Ok(())
    }
}

/// The unique-index form of a username.
pub fn username_key(username: &str) -> String {
    username.to_ascii_lowercase()
}

/// 1-64 characters from `A-Z a-z 0-9 . _ @ -`, starting with a letter or digit: safe in
/// an `otpauth://` label (no `:`), in logs and in a terminal.
pub fn valid_username(u: &str) -> Result<(), String> {
    let ok = !u.is_empty()
        && u.len() <= 64
        && u.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "username {u:?} must be 1-64 characters of A-Z a-z 0-9 . _ @ - starting with a letter or digit"
        ))
    }
}

/// Longest email address accepted (RFC 5321's path limit less the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// `email` checked and in its stored form, or why not: an RFC 5322 `addr-spec` as lettre
/// parses it (a dot-atom or quoted local part of at most 64 bytes, `@`, a domain), no
/// spaces or control characters, at most [`MAX_EMAIL_LEN`] bytes, and a domain that is a
/// full name (with a dot) or an address literal. The domain is lowercased (it is case
/// insensitive; the local part may not be, so it is kept as typed).
pub fn normalize_email(email: &str) -> Result<String, String> {
    let e = email.trim();
    let fail = |why: &str| Err(format!("email {e:?} is not a valid address: {why}"));
    if e.is_empty() {
        return fail("empty");
    }
    if e.len() > MAX_EMAIL_LEN {
        return fail("longer than 254 bytes");
    }
    if e.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return fail("spaces or control characters");
    }
    let addr: lettre::Address = match e.parse() {
        Ok(a) => a,
        Err(err) => return fail(&err.to_string()),
    };
    if addr.user().len() > 64 {
        return fail("the part before @ is longer than 64 bytes");
    }
    let domain = addr.domain();
    let literal = domain.starts_with('[') && domain.ends_with(']');
    if !literal && (!domain.contains('.') || domain.ends_with('.') || domain.starts_with('.')) {
        return fail("the domain must be a full name such as example.com");
    }
    Ok(format!("{}@{}", addr.user(), domain.to_ascii_lowercase()))
}

/// IPv4-mapped IPv6 addresses as IPv4; others unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl Tx<'_> {
    /// The staff user with id `id`, as this transaction sees it.
    pub fn staff(&self, id: Id) -> TxResult<Option<Staff>> {
        self.get(T::Staff, &id.to_be_bytes())
    }

    /// The staff user named `username`, whatever its case.
    pub fn staff_by_username(&self, username: &str) -> TxResult<Option<Staff>> {
        match self.index_get(T::StaffNames, &username_key(username))? {
            Some(id) => self.staff(id),
            None => Ok(None),
        }
    }

    /// Inserts (id 0) or replaces a staff user, keeping the username index right.
    pub fn put_staff(&self, s: &Staff) -> TxResult<Id> {
        s.validate().or_else(abort)?;
        let id = if s.id == 0 { self.new_id()? } else { s.id };
        if let Some(old) = self.replaced::<Staff>(T::Staff, &id.to_be_bytes())?
            && username_key(&old.username) != username_key(&s.username)
        {
            self.index_release(T::StaffNames, &username_key(&old.username))?;
        }
        self.index_claim(T::StaffNames, "staff", &username_key(&s.username), id)?;
        self.put(T::Staff, &id.to_be_bytes(), &Staff { id, ..s.clone() })?;
        Ok(id)
    }

    /// Removes a staff user; returns it. Their sessions fail from now on (the user is
    /// gone); `Store::delete_staff` also removes the session records.
    pub fn delete_staff(&self, id: Id) -> TxResult<Staff> {
        let Some(old) = self.staff(id)? else {
            return abort(StoreError::NotFound {
                kind: "staff",
                what: format!("#{id}"),
            });
        };
        self.index_release(T::StaffNames, &username_key(&old.username))?;
        self.tree(T::Staff).remove(&id.to_be_bytes())?;
        Ok(old)
    }
}

impl Store {
    /// Stores `s` (a new user when its id is 0) and returns it as stored.
    pub fn put_staff(&self, s: &Staff) -> Result<Staff, StoreError> {
        let id = self.write(|tx| tx.put_staff(s))?;
        Ok(Staff { id, ..s.clone() })
    }

    /// The staff user with id `id`, `None` when there is none.
    pub fn staff(&self, id: Id) -> Result<Option<Staff>, StoreError> {
        self.get(T::Staff, &id.to_be_bytes())
    }

    /// The staff user named `username`, whatever its case (how logins find the user).
    pub fn staff_by_username(&self, username: &str) -> Result<Option<Staff>, StoreError> {
        self.by_index(T::StaffNames, T::Staff, &username_key(username))
    }

    /// Every staff user in id order; a corrupt one is an `Err` in its place.
    pub fn staff_list(&self) -> Vec<Result<Staff, StoreError>> {
        self.scan(T::Staff, &[])
    }

    /// Whether any staff user exists (what `sipd init` refuses to run over).
    pub fn has_staff(&self) -> Result<bool, StoreError> {
        Ok(!self.tree(T::Staff).is_empty())
    }

    /// Deletes a staff user and their session records.
    pub fn delete_staff(&self, id: Id) -> Result<Staff, StoreError> {
        let old = self.write(|tx| tx.delete_staff(id))?;
        self.remove_sessions_of(id)?;
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staff record as stored before customers (no `account` field) still loads, as staff.
    #[test]
    fn a_record_stored_before_customers_loads() {
        let old = r#"{"id":3,"username":"ops","role":"operator",
            "password_hash":"$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "password_changed_ms":1,"must_change_password":false,"totp":null,
            "allowed_hosts":[],"enabled":true,"created_ms":1,"session_epoch":2}"#;
        let s: Staff = serde_json::from_str(old).unwrap();
        assert_eq!(
            (s.role, s.account, s.customer_of()),
            (Role::Operator, None, None)
        );
        s.validate().unwrap();
        // And a staff record written now has no `account` key: older readers are unaffected.
        assert!(!serde_json::to_string(&s).unwrap().contains("account"));
    }

    #[test]
    fn customers_and_only_customers_have_an_account() {
        let old = r#"{"id":3,"username":"c1","role":"customer",
            "password_hash":"$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "password_changed_ms":1,"enabled":true,"created_ms":1}"#;
        let mut s: Staff = serde_json::from_str(old).unwrap();
        assert!(s.validate().is_err(), "a customer without an account");
        s.account = Some(7);
        s.validate().unwrap();
        assert_eq!(s.customer_of(), Some(7));
        s.role = Role::Admin;
        assert!(s.validate().is_err(), "an admin with an account");
    }
}
