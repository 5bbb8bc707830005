//! Security: who and what may reach the SBC (the firewall, bans of source addresses, staff
//! users) and the audit log of what they did.

use serde_json::{Map, Value, json};

use super::Ctx;
use super::columns::{
    AUDIT_COLS, BAN_COLS, FIREWALL_ALLOW_COLS, FIREWALL_DENY_COLS, FIREWALL_SERVICE_COLS,
    STAFF_COLS,
};
use super::operations::num_param;
use super::output::created;
use super::records::{Coll, Crud, set, set_enabled};
use super::validation::{check_cidr, check_cidrs, time_param};
use crate::api::{Client, Error, Method, encode};
use crate::cli::{Audit, Bans, Enabled, Firewall, Staff};
use crate::table::Table;

const STAFF: Coll = Coll {
    path: "/api/staff",
    kind: "staff user",
    name_key: "username",
    cols: STAFF_COLS,
};

impl Ctx<'_, '_> {
    pub(super) fn firewall(&mut self, f: Firewall) -> Result<(), Error> {
        let change = !matches!(f, Firewall::List);
        self.firewall_inner(f).map_err(|e| match e {
            Error::Api(mut a) if change && a.status == 403 && a.code == "forbidden" => {
                a.message += "; firewall changes need the admin role";
                Error::Api(a)
            }
            e => e,
        })
    }

    fn firewall_inner(&mut self, f: Firewall) -> Result<(), Error> {
        let c = self.client()?;
        match f {
            Firewall::List => self.firewall_list(&c),
            Firewall::Allow { service, cidr } => {
                self.allow_list(&c, Method::Post, &service, &cidr, "allowed")
            }
            Firewall::Disallow { service, cidr } => {
                self.allow_list(&c, Method::Delete, &service, &cidr, "no longer allows")
            }
            Firewall::Deny { cidr } => {
                let cidr = check_cidr("CIDR", &cidr)?;
                let v = c.json(
                    Method::Post,
                    "/api/firewall/deny",
                    &[],
                    Some(&json!({"cidr": cidr})),
                )?;
                let msg = match v.get("id") {
                    Some(id) => format!("denied {cidr} (deny id {id})"),
                    None => format!("denied {cidr}"),
                };
                self.answer(&v, &msg)
            }
            Firewall::Undeny { id } => {
                let v = c.json(
                    Method::Delete,
                    &format!("/api/firewall/deny/{id}"),
                    &[],
                    None,
                )?;
                self.done(&v, &format!("removed deny {id}"))
            }
        }
    }

    /// The services, the allow entries and the deny list: three tables, one after the other.
    fn firewall_list(&mut self, c: &Client) -> Result<(), Error> {
        let v = c.get("/api/firewall")?;
        if self.g.json {
            return self.print_json(&v);
        }
        let services = Table::from_json(
            v.get("services").unwrap_or(&Value::Null),
            FIREWALL_SERVICE_COLS,
        );
        let entries = Table::from_json(
            v.get("allow_entries").unwrap_or(&json!([])),
            FIREWALL_ALLOW_COLS,
        );
        let deny = Table::from_json(v.get("deny").unwrap_or(&json!([])), FIREWALL_DENY_COLS);
        self.write(&format!(
            "{}\n{}\n{}",
            services.render(),
            entries.render(),
            deny.render()
        ));
        Ok(())
    }

    /// Adds (`POST`) or removes (`DELETE`) a CIDR in a service's allow list.
    fn allow_list(
        &mut self,
        c: &Client,
        method: Method,
        service: &str,
        cidr: &str,
        done: &str,
    ) -> Result<(), Error> {
        let cidr = check_cidr("CIDR", cidr)?;
        let body = json!({"service": service, "cidr": cidr});
        let v = c.json(method, "/api/firewall/allow", &[], Some(&body))?;
        self.done(&v, &format!("{service}: {done} {cidr}"))
    }

    pub(super) fn bans(&mut self, b: Bans) -> Result<(), Error> {
        let c = self.client()?;
        match b {
            Bans::List => {
                let v = c.get("/api/bans")?;
                self.list(&v, BAN_COLS)
            }
            Bans::Add {
                addr,
                duration,
                reason,
            } => {
                let addr = check_cidr("address or prefix", &addr)?;
                let mut body = json!({"addr": addr});
                if let Some(d) = duration {
                    body["duration_secs"] = d.into();
                }
                if let Some(r) = reason {
                    body["reason"] = r.into();
                }
                let v = c.json(Method::Post, "/api/bans", &[], Some(&body))?;
                self.done(&v, &format!("banned {addr}"))
            }
            Bans::Remove { addr } => {
                let addr = check_cidr("address or prefix", &addr)?;
                let v = c.json(
                    Method::Delete,
                    &format!("/api/bans/{}", encode(&addr)),
                    &[],
                    None,
                )?;
                self.done(&v, &format!("lifted the ban on {addr}"))
            }
        }
    }

    pub(super) fn staff(&mut self, s: Staff) -> Result<(), Error> {
        let c = self.client()?;
        match s {
            Staff::List => self.crud(&c, &STAFF, Crud::List),
            Staff::Add {
                username,
                role,
                account,
                allowed_hosts,
                password_stdin,
                must_change_password,
                email,
                email_codes,
            } => {
                let hosts = check_cidrs(&allowed_hosts)?;
                let account = match account {
                    Some(a) => Some(self.id_in(&c, &super::provisioning::ACCOUNTS, &a)?),
                    None => None,
                };
                let password = self.new_password(password_stdin, "Password")?;
                let mut body = json!({"username": username, "role": role_name(&role),
                                  "password": password, "allowed_hosts": hosts});
                if let Some(a) = account {
                    body["account"] = a.into();
                }
                if let Some(m) = must_change_password {
                    body["must_change_password"] = m.into();
                }
                if let Some(e) = email {
                    body["email"] = e.into();
                }
                if email_codes {
                    body["email_codes"] = true.into();
                }
                self.staff_add(&c, &body)
            }
            Staff::Update {
                user,
                role,
                enabled,
                allowed_hosts,
                any_host,
                email,
                no_email,
                email_codes,
                reset_password,
                password_stdin,
            } => {
                let id = self.id_in(&c, &STAFF, &user)?;
                let mut body =
                    staff_update_body(role.as_deref(), &enabled, &allowed_hosts, any_host)?;
                if let Some(e) = email {
                    body["email"] = e.into();
                } else if no_email {
                    body["email"] = Value::Null;
                }
                if let Some(c) = email_codes {
                    body["email_codes"] = c.into();
                }
                if reset_password {
                    body["password"] = self.new_password(password_stdin, "New password")?.into();
                }
                if body.as_object().is_some_and(Map::is_empty) {
                    return Err(Error::Usage(
                        "nothing to change: give --role, --enable/--disable, --allowed-host, \
                         --email, --email-codes or --reset-password"
                            .into(),
                    ));
                }
                self.crud(&c, &STAFF, Crud::Update(id, body))
            }
            Staff::Delete { user } => {
                let id = self.id_in(&c, &STAFF, &user)?;
                self.crud(&c, &STAFF, Crud::Delete(id))
            }
            Staff::Revoke { user } => {
                let id = self.id_in(&c, &STAFF, &user)?;
                let v = c.json(Method::Post, &format!("/api/staff/{id}/revoke"), &[], None)?;
                self.done(&v, &format!("revoked every session of staff user {id}"))
            }
            Staff::Password {
                user,
                password_stdin,
            } => {
                let id = self.id_in(&c, &STAFF, &user)?;
                let password = self.new_password(password_stdin, "New password")?;
                let v = c.json(
                    Method::Post,
                    &format!("/api/staff/{id}/password"),
                    &[],
                    Some(&json!({"password": password})),
                )?;
                if self.g.json {
                    return self.print_json(&v);
                }
                self.say(&format!(
                    "password of staff user {id} set; they must change it at their next login \
                     (their sessions were ended)"
                ))?;
                self.strength(v.get("strength"))
            }
            Staff::TotpReset { user } => {
                let id = self.id_in(&c, &STAFF, &user)?;
                let v = c.json(
                    Method::Post,
                    &format!("/api/staff/{id}/totp/reset"),
                    &[],
                    None,
                )?;
                self.done(&v, &format!("TOTP of staff user {id} reset"))
            }
        }
    }

    /// Creates a staff user; the reply is `201 {"staff": StaffView, "strength": {…}}`.
    fn staff_add(&mut self, c: &Client, body: &Value) -> Result<(), Error> {
        let v = c.json(Method::Post, "/api/staff", &[], Some(body))?;
        if self.g.json {
            return self.print_json(&v);
        }
        let staff = v.get("staff").unwrap_or(&v);
        self.say(&created("staff user", staff))?;
        self.key_values(staff);
        self.strength(v.get("strength"))
    }

    pub(super) fn audit(&mut self, a: Audit) -> Result<(), Error> {
        let c = self.client()?;
        let q = [
            ("after", num_param(a.after)),
            ("user", a.user.unwrap_or_default()),
            ("kind", a.kind.unwrap_or_default()),
            ("from_ms", time_param("--from", a.from.as_deref())?),
            ("to_ms", time_param("--to", a.to.as_deref())?),
            ("limit", num_param(a.limit)),
        ];
        let v = c.json(Method::Get, "/api/audit", &q, None)?;
        self.list(&v, AUDIT_COLS)
    }
}

/// The patch of `staff update` from role, state and hosts: only what was given (the caller
/// adds the email fields and refuses an empty patch).
fn staff_update_body(
    role: Option<&str>,
    enabled: &Enabled,
    allowed_hosts: &[String],
    any_host: bool,
) -> Result<Value, Error> {
    let mut m = Map::new();
    set(&mut m, "role", role.map(role_name));
    set_enabled(&mut m, enabled);
    if any_host {
        m.insert("allowed_hosts".into(), json!([]));
    } else if !allowed_hosts.is_empty() {
        m.insert("allowed_hosts".into(), json!(check_cidrs(allowed_hosts)?));
    }
    Ok(Value::Object(m))
}

/// `readonly` is accepted on the command line for `read-only`, the API's name.
fn role_name(r: &str) -> &str {
    if r == "readonly" { "read-only" } else { r }
}
