//! Provisioning: the accounts that send calls (with their rules and top-ups), the tariffs
//! that bill them and the connections calls are routed to.

use serde_json::{Value, json};

use super::Ctx;
use super::columns::{ACCOUNT_COLS, CONNECTION_COLS, RULE_COLS, TARIFF_COLS, TOPUP_COLS};
use super::records::{Coll, Crud, finish_body, set, set_enabled};
use super::validation::{check_amount, check_cidr, check_host_port};
use crate::api::{Error, Method};
use crate::cli::{
    AccountFields, Accounts, ConnectionFields, Connections, RuleFields, Rules, Target,
    TariffFields, Tariffs,
};
use crate::table;

pub(super) const ACCOUNTS: Coll = Coll {
    path: "/api/accounts",
    kind: "account",
    name_key: "name",
    cols: ACCOUNT_COLS,
};
const TARIFFS: Coll = Coll {
    path: "/api/tariffs",
    kind: "tariff",
    name_key: "name",
    cols: TARIFF_COLS,
};
const CONNECTIONS: Coll = Coll {
    path: "/api/connections",
    kind: "connection",
    name_key: "name",
    cols: CONNECTION_COLS,
};
/// Rules are given by id, and listed and created under their account.
const RULES: Coll = Coll {
    path: "/api/rules",
    kind: "rule",
    name_key: "name",
    cols: RULE_COLS,
};

/// `list|get|create|update|delete` of accounts, tariffs or connections, with the record
/// given by id or name and `F` its fields.
enum Cmd<F> {
    List,
    Get(Target),
    Create(F),
    Update(Target, F),
    Delete(Target),
}

/// Builds the body of a create (`true`) or an update (`false`) from the fields.
type BodyFn<'a, 'b, F> = fn(&mut Ctx<'a, 'b>, F, bool) -> Result<Value, Error>;

impl<'a, 'b> Ctx<'a, 'b> {
    /// Resolves the record's name, builds the body, then runs the operation.
    fn records<F>(
        &mut self,
        coll: &Coll,
        cmd: Cmd<F>,
        body: BodyFn<'a, 'b, F>,
    ) -> Result<(), Error> {
        let c = self.client()?;
        let op = match cmd {
            Cmd::List => Crud::List,
            Cmd::Get(t) => Crud::Get(self.id_in(&c, coll, &t)?),
            Cmd::Create(f) => Crud::Create(body(self, f, true)?),
            Cmd::Update(t, f) => {
                let id = self.id_in(&c, coll, &t)?;
                Crud::Update(id, body(self, f, false)?)
            }
            Cmd::Delete(t) => Crud::Delete(self.id_in(&c, coll, &t)?),
        };
        self.crud(&c, coll, op)
    }

    pub(super) fn accounts(&mut self, a: Accounts) -> Result<(), Error> {
        let cmd = match a {
            Accounts::List => Cmd::List,
            Accounts::Get { account } => Cmd::Get(account),
            Accounts::Create(f) => Cmd::Create(f),
            Accounts::Update { account, fields } => Cmd::Update(account, fields),
            Accounts::Delete { account } => Cmd::Delete(account),
            Accounts::Topup {
                account,
                amount,
                note,
            } => return self.topup(&account, &amount, note),
            Accounts::Topups { account } => {
                let c = self.client()?;
                let id = self.id_in(&c, &ACCOUNTS, &account)?;
                let v = c.get(&format!("/api/accounts/{id}/topups"))?;
                return self.list(&v, TOPUP_COLS);
            }
            Accounts::Template { account } => {
                let c = self.client()?;
                let id = self.id_in(&c, &ACCOUNTS, &account)?;
                let v = c.get(&format!("/api/accounts/{id}/login-template"))?;
                return self.template_out(&v);
            }
            Accounts::TemplateSet {
                account,
                min_length,
                min_classes,
                max_age_days,
                second_factor,
            } => {
                let c = self.client()?;
                let id = self.id_in(&c, &ACCOUNTS, &account)?;
                let body = json!({"min_length": min_length, "min_classes": min_classes,
                                  "max_age_days": max_age_days,
                                  "require_second_factor": second_factor});
                let path = format!("/api/accounts/{id}/login-template");
                let v = c.json(Method::Put, &path, &[], Some(&body))?;
                return self.template_out(&v);
            }
            Accounts::TemplateClear { account } => {
                let c = self.client()?;
                let id = self.id_in(&c, &ACCOUNTS, &account)?;
                let path = format!("/api/accounts/{id}/login-template");
                let v = c.json(Method::Delete, &path, &[], None)?;
                return self.done(&v, &format!("account {id}: password template removed"));
            }
        };
        self.records(&ACCOUNTS, cmd, Self::account_body)
    }

    /// A template and the rules in effect: JSON, or the rules as key/values.
    fn template_out(&mut self, v: &Value) -> Result<(), Error> {
        if self.g.json {
            return self.print_json(v);
        }
        let mut rules = v.clone();
        if let Some(m) = rules.as_object_mut() {
            m.remove("template");
        }
        self.key_values(&rules);
        Ok(())
    }

    fn topup(&mut self, account: &str, amount: &str, note: Option<String>) -> Result<(), Error> {
        let c = self.client()?;
        check_amount("amount", amount)?;
        let id = self.id_in(&c, &ACCOUNTS, account)?;
        let mut body = json!({"amount": amount});
        if let Some(n) = note {
            body["note"] = n.into();
        }
        let v = c.json(
            Method::Post,
            &format!("/api/accounts/{id}/topup"),
            &[],
            Some(&body),
        )?;
        let msg = match v.get("balance") {
            Some(b) => format!(
                "account {id}: added {amount}; balance {}",
                table::format_value(b, table::Fmt::Plain)
            ),
            None => format!("account {id}: added {amount}"),
        };
        self.answer(&v, &msg)
    }

    fn account_body(&mut self, f: AccountFields, create: bool) -> Result<Value, Error> {
        let mut m = self.data(&f.data)?;
        set(&mut m, "name", f.name);
        set_enabled(&mut m, &f.enabled);
        if let Some(t) = f.tariff {
            let t = t.trim().to_owned();
            let v = if t.is_empty() || t == "none" {
                Value::Null
            } else {
                t.into()
            };
            m.insert("tariff".into(), v);
        }
        if let Some(b) = &f.balance {
            check_amount("--balance", b)?;
        }
        set(&mut m, "balance", f.balance);
        set(&mut m, "cps_limit", f.cps_limit);
        set(&mut m, "max_sessions", f.max_sessions);
        set(&mut m, "max_call_secs", f.max_call_secs);
        if f.no_sip {
            m.insert("sip".into(), Value::Null);
        } else if f.sip_username.is_some() || f.sip_password_stdin {
            let Some(user) = f.sip_username else {
                return Err(Error::Usage(
                    "--sip-password-stdin needs --sip-username".into(),
                ));
            };
            let mut sip = json!({"username": user});
            if f.sip_password_stdin {
                sip["password"] = self.stdin_line("SIP password")?.into();
            }
            m.insert("sip".into(), sip);
        }
        finish_body(m, create, "account")
    }

    pub(super) fn rules(&mut self, r: Rules) -> Result<(), Error> {
        let c = self.client()?;
        let under = |id: u64| format!("/api/accounts/{id}/rules");
        match r {
            Rules::List { account } => {
                let id = self.id_in(&c, &ACCOUNTS, &account)?;
                self.crud_at(&c, &RULES, &under(id), Crud::List)
            }
            Rules::Add { account, fields } => {
                let id = self.id_in(&c, &ACCOUNTS, &account)?;
                let body = self.rule_body(fields, true)?;
                self.crud_at(&c, &RULES, &under(id), Crud::Create(body))
            }
            Rules::Update { rule, fields } => {
                let body = self.rule_body(fields, false)?;
                self.crud(&c, &RULES, Crud::Update(rule, body))
            }
            Rules::Delete { rule } => self.crud(&c, &RULES, Crud::Delete(rule)),
        }
    }

    fn rule_body(&mut self, f: RuleFields, create: bool) -> Result<Value, Error> {
        let mut m = self.data(&f.data)?;
        set(&mut m, "name", f.name);
        if let Some(r) = f.remote {
            let v = if r.is_empty() || r == "any" {
                Value::Null
            } else {
                check_cidr("--remote", &r)?.into()
            };
            m.insert("remote".into(), v);
        }
        for (key, prefix, regex) in [
            ("cli", f.cli_prefix, f.cli_regex),
            ("cld", f.cld_prefix, f.cld_regex),
        ] {
            let v = match (prefix, regex) {
                (Some(p), _) if p.is_empty() => Some(Value::Null),
                (Some(p), _) => Some(json!({"prefix": p})),
                (None, Some(r)) if r.is_empty() => Some(Value::Null),
                (None, Some(r)) => Some(json!({"regex": r})),
                (None, None) => None,
            };
            if let Some(v) = v {
                m.insert(key.into(), v);
            }
        }
        set(&mut m, "ip_only", f.ip_only);
        finish_body(m, create, "rule")
    }

    pub(super) fn tariffs(&mut self, t: Tariffs) -> Result<(), Error> {
        let cmd = match t {
            Tariffs::List => Cmd::List,
            Tariffs::Get { tariff } => Cmd::Get(tariff),
            Tariffs::Create(f) => Cmd::Create(f),
            Tariffs::Update { tariff, fields } => Cmd::Update(tariff, fields),
            Tariffs::Delete { tariff } => Cmd::Delete(tariff),
        };
        self.records(&TARIFFS, cmd, Self::tariff_body)
    }

    fn tariff_body(&mut self, f: TariffFields, create: bool) -> Result<Value, Error> {
        let mut m = self.data(&f.data)?;
        set(&mut m, "name", f.name);
        if let Some(r) = &f.rate {
            check_amount("--rate", r)?;
        }
        set(&mut m, "rate_per_minute", f.rate);
        set(&mut m, "expected_call_secs", f.expected_call_secs);
        set(&mut m, "initial_increment_secs", f.initial_increment_secs);
        set(&mut m, "increment_secs", f.increment_secs);
        finish_body(m, create, "tariff")
    }

    pub(super) fn connections(&mut self, c: Connections) -> Result<(), Error> {
        let cmd = match c {
            Connections::List => Cmd::List,
            Connections::Get { connection } => Cmd::Get(connection),
            Connections::Create(f) => Cmd::Create(f),
            Connections::Update { connection, fields } => Cmd::Update(connection, fields),
            Connections::Delete { connection } => Cmd::Delete(connection),
        };
        self.records(&CONNECTIONS, cmd, Self::connection_body)
    }

    fn connection_body(&mut self, f: ConnectionFields, create: bool) -> Result<Value, Error> {
        let mut m = self.data(&f.data)?;
        set(&mut m, "name", f.name);
        set_enabled(&mut m, &f.enabled);
        if let Some(d) = &f.destination {
            check_host_port("--destination", d)?;
        }
        set(&mut m, "destination", f.destination);
        set(&mut m, "transport", f.transport);
        if !f.cld_prefixes.is_empty() {
            m.insert("cld_prefixes".into(), json!(f.cld_prefixes));
        }
        set(&mut m, "max_channels", f.max_channels);
        set(&mut m, "cps_limit", f.cps_limit);
        set(&mut m, "priority", f.priority);
        finish_body(m, create, "connection")
    }
}
