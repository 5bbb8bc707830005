//! `sbcctl`: runs one command line against the management API. Everything it touches from
//! the outside (environment, standard streams, the terminal) comes in as arguments, so tests
//! run it in-process against a fake server.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use serde_json::{Map, Value, json};

use crate::api::{self, Client, Error, Method, encode, exit};
use crate::cli::*;
use crate::table::{self, Table, col, time};
use crate::token::{self, Saved};

/// What `sbcctl` reads from its environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `SBC_URL`
    pub url: Option<String>,
    /// `SBC_TOKEN`
    pub token: Option<String>,
    /// `SBC_CA`
    pub ca: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME/sbcctl` or `~/.config/sbcctl`
    pub config_dir: Option<PathBuf>,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            url: var("SBC_URL"),
            token: var("SBC_TOKEN"),
            ca: var("SBC_CA").map(PathBuf::from),
            config_dir: token::config_dir(
                var("XDG_CONFIG_HOME").as_deref(),
                var("HOME").as_deref(),
            ),
        }
    }
}

/// Questions asked on the terminal.
pub trait Prompt {
    /// A line, echoed.
    fn line(&mut self, label: &str) -> io::Result<String>;
    /// A secret, not echoed.
    fn secret(&mut self, label: &str) -> io::Result<String>;
}

/// Asks on `/dev/tty`, so prompts work while standard streams are redirected.
pub struct Tty;

impl Prompt for Tty {
    fn line(&mut self, label: &str) -> io::Result<String> {
        tty_read(label, false)
    }
    fn secret(&mut self, label: &str) -> io::Result<String> {
        tty_read(label, true)
    }
}

fn tty_read(label: &str, secret: bool) -> io::Result<String> {
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| io::Error::new(e.kind(), format!("no terminal to ask on: {e}")))?;
    let fd = tty.as_raw_fd();
    (&tty).write_all(label.as_bytes())?;
    // SAFETY: termios is plain data; fd is open for the lifetime of `tty`.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if secret && libc::tcgetattr(fd, &mut t) == 0 {
            let old = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            Some(old)
        } else {
            None
        }
    };
    let mut line = String::new();
    let read = io::BufReader::new(&tty).read_line(&mut line);
    if let Some(old) = saved {
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    }
    read?;
    Ok(trim_newline(line))
}

fn trim_newline(mut s: String) -> String {
    while s.ends_with(['\n', '\r']) {
        s.pop();
    }
    s
}

/// The standard streams and the terminal.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub stdin: &'a mut dyn BufRead,
    pub prompt: &'a mut dyn Prompt,
}

/// The binary's `main`: the process's environment and streams; returns the exit code.
pub fn main() -> i32 {
    let env = Env::from_process();
    let stdin = io::stdin();
    let mut stdin = stdin.lock();
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let code = run(
        std::env::args_os(),
        &env,
        &mut Io {
            out: &mut out,
            err: &mut err,
            stdin: &mut stdin,
            prompt: &mut Tty,
        },
    );
    let _ = out.flush();
    code
}

/// Runs one command line; returns the exit code (see [`api::exit`]).
pub fn run<I, T>(args: I, env: &Env, io: &mut Io<'_>) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = io.out.write_all(text.as_bytes());
                    exit::OK
                }
                _ => {
                    let _ = io.err.write_all(text.as_bytes());
                    exit::USAGE
                }
            };
        }
    };
    let json = cli.global.json;
    match Ctx::dispatch(cli, env, io) {
        Ok(()) => exit::OK,
        Err(e) => {
            if json {
                let _ = writeln!(io.err, "{}", e.to_json());
            } else {
                let _ = writeln!(io.err, "sbcctl: {e}");
                if let Some(hint) = hint(&e) {
                    let _ = writeln!(io.err, "{hint}");
                }
            }
            e.exit_code()
        }
    }
}

fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::Api(a) => match a.code.as_str() {
            "token_invalid" | "token_expired" | "token_revoked" => {
                Some("log in again: sbcctl login")
            }
            "setup_only" => {
                Some("this session may only finish setup: sbcctl totp enrol, sbcctl password")
            }
            _ => None,
        },
        _ => None,
    }
}

struct Ctx<'a, 'b> {
    g: Global,
    env: &'a Env,
    io: &'a mut Io<'b>,
    saved: Result<Option<Saved>, Error>,
}

impl<'a, 'b> Ctx<'a, 'b> {
    fn dispatch(cli: Cli, env: &'a Env, io: &'a mut Io<'b>) -> Result<(), Error> {
        let saved = match &env.config_dir {
            Some(dir) => token::load(dir),
            None => Ok(None),
        };
        let mut cx = Ctx {
            g: cli.global,
            env,
            io,
            saved,
        };
        match cli.command {
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "sbcctl", cx.io.out);
                Ok(())
            }
            Command::Login(l) => cx.login(l),
            Command::Logout { all } => cx.logout(all),
            Command::Me => {
                let v = cx.client()?.get("/api/me")?;
                cx.show(&v)
            }
            Command::Password { stdin } => cx.password(stdin),
            Command::Totp(t) => cx.totp(t),
            Command::Accounts(a) => cx.accounts(a),
            Command::Rules(r) => cx.rules(r),
            Command::Tariffs(t) => cx.tariffs(t),
            Command::Connections(c) => cx.connections(c),
            Command::Firewall(f) => cx.firewall(f),
            Command::Bans(b) => cx.bans(b),
            Command::Calls(c) => cx.calls(c),
            Command::Cdrs(Cdrs::List(f)) => cx.cdrs(f),
            Command::Status => {
                let v = cx.client()?.get("/api/status")?;
                cx.show(&v)
            }
            Command::Alerts => {
                let v = cx.client()?.get("/api/alerts")?;
                if !cx.g.json && v.as_array().is_some_and(Vec::is_empty) {
                    return cx.say("no alerts");
                }
                cx.list(&v, ALERT_COLS)
            }
            Command::Staff(s) => cx.staff(s),
            Command::Audit(a) => cx.audit(a),
        }
    }

    // ---- connection -------------------------------------------------------------------

    /// The URL: `--url`, `SBC_URL`, the saved session's, the default.
    fn url(&self) -> String {
        self.g
            .url
            .clone()
            .or_else(|| self.env.url.clone())
            .or_else(|| self.saved_ok().map(|s| s.url.clone()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned())
    }

    fn saved_ok(&self) -> Option<&Saved> {
        self.saved.as_ref().ok().and_then(Option::as_ref)
    }

    /// The saved session if it belongs to this URL (a token is never sent elsewhere).
    fn saved_for(&self, url: &str) -> Option<&Saved> {
        self.saved_ok().filter(|s| same_url(&s.url, url))
    }

    fn options(&self, url: &str) -> api::Options {
        let saved = self.saved_for(url);
        api::Options {
            url: url.to_owned(),
            insecure: self.g.insecure || saved.is_some_and(|s| s.insecure),
            ca: self
                .g
                .ca
                .clone()
                .or_else(|| self.env.ca.clone())
                .or_else(|| saved.and_then(|s| s.ca.clone())),
            allow_http: self.g.allow_http,
            timeout: Duration::from_secs(self.g.timeout.max(1)),
        }
    }

    /// A client with the session's token: `SBC_TOKEN`, else the saved one for this URL.
    fn client(&self) -> Result<Client, Error> {
        let url = self.url();
        let token = match &self.env.token {
            Some(t) => t.clone(),
            None => {
                if let Err(e) = &self.saved {
                    return Err(e.clone());
                }
                match self.saved_for(&url) {
                    Some(s) => s.token.clone(),
                    None => {
                        return Err(Error::NotLoggedIn(match self.saved_ok() {
                            Some(s) => format!(
                                "not logged in to {url} (the saved session is for {}): sbcctl login",
                                s.url
                            ),
                            None => {
                                format!("not logged in to {url}: sbcctl login (or set SBC_TOKEN)")
                            }
                        }));
                    }
                }
            }
        };
        Client::new(&self.options(&url), Some(token))
    }

    // ---- output -----------------------------------------------------------------------

    fn say(&mut self, text: &str) -> Result<(), Error> {
        let _ = writeln!(self.io.out, "{text}");
        Ok(())
    }

    fn print_json(&mut self, v: &Value) -> Result<(), Error> {
        if !v.is_null() {
            let _ = writeln!(
                self.io.out,
                "{}",
                serde_json::to_string_pretty(v).expect("serialises")
            );
        }
        Ok(())
    }

    /// One object: JSON, or `key: value` lines.
    fn show(&mut self, v: &Value) -> Result<(), Error> {
        if self.g.json {
            return self.print_json(v);
        }
        let _ = self.io.out.write_all(table::key_values(v).as_bytes());
        Ok(())
    }

    /// A list: JSON, or a table.
    fn list(&mut self, v: &Value, cols: &[table::Col]) -> Result<(), Error> {
        if self.g.json {
            return self.print_json(v);
        }
        let _ = self
            .io
            .out
            .write_all(Table::from_json(v, cols).render().as_bytes());
        Ok(())
    }

    /// The result of a change: JSON (none for 204), or `done` (and the object, if any).
    fn done(&mut self, v: &Value, what: &str) -> Result<(), Error> {
        if self.g.json {
            return self.print_json(v);
        }
        self.say(what)?;
        if v.is_object() {
            let _ = self.io.out.write_all(table::key_values(v).as_bytes());
        }
        Ok(())
    }

    // ---- input ------------------------------------------------------------------------

    fn stdin_line(&mut self, what: &str) -> Result<String, Error> {
        let mut line = String::new();
        match self.io.stdin.read_line(&mut line) {
            Ok(0) => Err(Error::Usage(format!("{what}: standard input is empty"))),
            Ok(_) => Ok(trim_newline(line)),
            Err(e) => Err(Error::Local(format!("{what}: reading standard input: {e}"))),
        }
    }

    fn ask(&mut self, label: &str, secret: bool) -> Result<String, Error> {
        let r = if secret {
            self.io.prompt.secret(label)
        } else {
            self.io.prompt.line(label)
        };
        r.map_err(|e| Error::Usage(format!("{}: {e}", label.trim_end_matches([':', ' ']))))
    }

    /// A new password: from standard input, or asked twice.
    fn new_password(&mut self, from_stdin: bool, label: &str) -> Result<String, Error> {
        if from_stdin {
            return self.stdin_line(label);
        }
        let p = self.ask(&format!("{label}: "), true)?;
        let again = self.ask(&format!("{label} again: "), true)?;
        if p != again {
            return Err(Error::Usage("the passwords differ".into()));
        }
        Ok(p)
    }

    /// `--data`: a JSON object, from the argument, `@FILE` or `@-`.
    fn data(&mut self, d: &Data) -> Result<Map<String, Value>, Error> {
        let Some(text) = &d.data else {
            return Ok(Map::new());
        };
        let text = match text.strip_prefix('@') {
            Some("-") => {
                let mut s = String::new();
                io::Read::read_to_string(&mut self.io.stdin, &mut s)
                    .map_err(|e| Error::Local(format!("--data @-: {e}")))?;
                s
            }
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| Error::Local(format!("--data @{file}: {e}")))?,
            None => text.clone(),
        };
        match serde_json::from_str(&text) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Error::Usage("--data: expected a JSON object".into())),
            Err(e) => Err(Error::Usage(format!("--data: not JSON: {e}"))),
        }
    }

    /// An id, or a name looked up in `list_path` (`key` is the name field).
    fn resolve(
        &self,
        client: &Client,
        list_path: &str,
        key: &str,
        what: &str,
        target: &str,
    ) -> Result<u64, Error> {
        if let Ok(id) = target.parse() {
            return Ok(id);
        }
        let list = client.get(list_path)?;
        list.as_array()
            .into_iter()
            .flatten()
            .find(|x| x.get(key).and_then(Value::as_str) == Some(target))
            .and_then(|x| x.get("id").and_then(Value::as_u64))
            .ok_or_else(|| Error::NotFound(format!("no {what} named {target:?}")))
    }

    /// The id of `target` (an id, or a record's name) in `coll`.
    fn id_in(&self, client: &Client, coll: &Coll, target: &str) -> Result<u64, Error> {
        self.resolve(client, coll.path, "name", coll.kind, target)
    }

    /// List, get, create, update or delete in a collection the API serves the same way for
    /// every resource; the caller has resolved names to ids and built the body.
    fn crud(&mut self, client: &Client, coll: &Coll, op: Crud) -> Result<(), Error> {
        let one = |id: u64| format!("{}/{id}", coll.path);
        match op {
            Crud::List => {
                let v = client.get(coll.path)?;
                self.list(&v, coll.cols)
            }
            Crud::Get(id) => {
                let v = client.get(&one(id))?;
                self.show(&v)
            }
            Crud::Create(body) => {
                let v = client.json(Method::Post, coll.path, &[], Some(&body))?;
                let msg = created(coll.kind, &v);
                self.done(&v, &msg)
            }
            Crud::Update(id, body) => {
                let v = client.json(Method::Put, &one(id), &[], Some(&body))?;
                self.done(&v, &format!("updated {} {id}", coll.kind))
            }
            Crud::Delete(id) => {
                let v = client.json(Method::Delete, &one(id), &[], None)?;
                self.done(&v, &format!("deleted {} {id}", coll.kind))
            }
        }
    }

    // ---- session ----------------------------------------------------------------------

    fn login(&mut self, l: Login) -> Result<(), Error> {
        let url = self.url();
        let client = Client::new(&self.options(&url), None)?;
        let username = match l.user {
            Some(u) => u,
            None => self.ask("Username: ", false)?,
        };
        let password = if l.password_stdin {
            self.stdin_line("password")?
        } else {
            self.ask("Password: ", true)?
        };
        let mut body = json!({"username": username, "password": password});
        if let Some(t) = &l.totp {
            body["totp"] = t.trim().into();
        }
        let mut asked = false;
        let v = loop {
            match client.json(Method::Post, "/api/login", &[], Some(&body)) {
                Ok(v) => break v,
                Err(Error::Api(e)) if e.code == "totp_required" && l.totp.is_none() && !asked => {
                    asked = true;
                    match self.io.prompt.line("TOTP code: ") {
                        Ok(code) => body["totp"] = code.trim().into(),
                        Err(_) => {
                            return Err(Error::Api(api::ApiError {
                                message: format!("{}; pass --totp CODE", e.message),
                                ..e
                            }));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let Some(tok) = v.get("token").and_then(Value::as_str).map(str::to_owned) else {
            return Err(Error::Transport("the login reply has no token".to_owned()));
        };
        let mut saved_to = None;
        if !l.no_save {
            let dir = self.env.config_dir.clone().ok_or_else(|| {
                Error::Local(
                    "no config directory (set HOME or XDG_CONFIG_HOME), or use --no-save".into(),
                )
            })?;
            let ca = self
                .g
                .ca
                .clone()
                .or_else(|| self.env.ca.clone())
                .map(|p| std::path::absolute(&p).unwrap_or(p));
            let s = Saved {
                url: client.base().to_owned(),
                token: tok.clone(),
                username: Some(username.clone()),
                expires_ms: v.get("expires_ms").and_then(Value::as_u64),
                ca,
                insecure: self.g.insecure,
            };
            saved_to = Some(token::save(&dir, &s)?);
        }
        if l.print_token {
            return self.say(&tok);
        }
        if self.g.json {
            let mut v = v;
            if let Some(o) = v.as_object_mut() {
                o.remove("token");
                if let Some(p) = &saved_to {
                    o.insert("token_file".into(), p.display().to_string().into());
                }
            }
            return self.print_json(&v);
        }
        let role = v.get("role").and_then(Value::as_str).unwrap_or("?");
        let mut msg = format!("logged in to {} as {username} ({role})", client.base());
        if let Some(ms) = v.get("expires_ms").and_then(Value::as_u64) {
            msg += &format!("; session expires {} UTC", table::format_ms(ms));
        }
        self.say(&msg)?;
        if let Some(p) = &saved_to {
            let _ = writeln!(self.io.err, "session saved in {}", p.display());
        }
        for m in v
            .get("must")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let line = match m.as_str() {
                Some("enrol_totp") => "you must enrol TOTP: sbcctl totp enrol".to_owned(),
                Some("change_password") => {
                    "you must change your password: sbcctl password".to_owned()
                }
                _ => format!("you must: {m}"),
            };
            let _ = writeln!(self.io.err, "{line}");
        }
        if v.get("setup_only").and_then(Value::as_bool) == Some(true) {
            let _ = writeln!(
                self.io.err,
                "this session can only finish setup until that is done"
            );
        }
        Ok(())
    }

    fn logout(&mut self, all: bool) -> Result<(), Error> {
        let client = self.client()?;
        let path = if all {
            "/api/logout/all"
        } else {
            "/api/logout"
        };
        let ended = match client.json(Method::Post, path, &[], None) {
            Ok(_) => "logged out",
            // The session is already over on the server: forget it here too.
            Err(Error::Api(e)) if e.status == 401 => "session had already ended",
            Err(e) => return Err(e),
        };
        let url = self.url();
        if self.env.token.is_none()
            && self.saved_for(&url).is_some()
            && let Some(dir) = &self.env.config_dir
        {
            token::remove(dir)?;
        }
        if self.g.json {
            return Ok(());
        }
        self.say(if all && ended == "logged out" {
            "logged out of every session"
        } else {
            ended
        })
    }

    fn password(&mut self, stdin: bool) -> Result<(), Error> {
        let client = self.client()?;
        let current = if stdin {
            self.stdin_line("current password")?
        } else {
            self.ask("Current password: ", true)?
        };
        let new = self.new_password(stdin, "New password")?;
        let v = client.json(
            Method::Post,
            "/api/me/password",
            &[],
            Some(&json!({"current": current, "new": new})),
        )?;
        if self.g.json {
            return self.print_json(&v);
        }
        self.say("password changed")?;
        self.strength(v.get("strength"))?;
        // The server ends the user's other sessions; this one stays.
        let _ = writeln!(self.io.err, "your other sessions were ended");
        Ok(())
    }

    /// A password strength estimate `{"score", "guesses_log10", "warning", "suggestions"}`.
    fn strength(&mut self, s: Option<&Value>) -> Result<(), Error> {
        let Some(s) = s else { return Ok(()) };
        if let Some(score) = s.get("score").and_then(Value::as_u64) {
            self.say(&format!("strength: {score}/4"))?;
        }
        if let Some(w) = s
            .get("warning")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
        {
            self.say(&format!("warning: {w}"))?;
        }
        for x in s
            .get("suggestions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(x) = x.as_str() {
                self.say(&format!("suggestion: {x}"))?;
            }
        }
        Ok(())
    }

    fn totp(&mut self, t: Totp) -> Result<(), Error> {
        let client = self.client()?;
        match t {
            Totp::Enrol => {
                let v = client.json(Method::Post, "/api/me/totp", &[], None)?;
                if self.g.json {
                    return self.print_json(&v);
                }
                if let Some(qr) = v.get("qr").and_then(Value::as_str) {
                    self.say(qr)?;
                }
                let uri = v.get("otpauth_uri").and_then(Value::as_str).unwrap_or("-");
                self.say(&format!("otpauth URI: {uri}"))?;
                if let Some(secret) = v.get("secret").and_then(Value::as_str) {
                    self.say(&format!("secret (to type in by hand): {secret}"))?;
                }
                self.say("scan it (or enter the URI) in an authenticator app, then: sbcctl totp confirm CODE")
            }
            Totp::Confirm { code } => {
                let code = match code {
                    Some(c) => c,
                    None => self.ask("TOTP code: ", false)?,
                };
                let v = client.json(
                    Method::Post,
                    "/api/me/totp/confirm",
                    &[],
                    Some(&json!({"code": code.trim()})),
                )?;
                self.done(&v, "TOTP enrolled")
            }
        }
    }

    // ---- accounts, rules, tariffs, connections ----------------------------------------

    fn accounts(&mut self, a: Accounts) -> Result<(), Error> {
        let c = self.client()?;
        let coll = &ACCOUNTS;
        match a {
            Accounts::List => self.crud(&c, coll, Crud::List),
            Accounts::Get { account } => {
                let id = self.id_in(&c, coll, &account)?;
                self.crud(&c, coll, Crud::Get(id))
            }
            Accounts::Create(f) => {
                let body = self.account_body(f, true)?;
                self.crud(&c, coll, Crud::Create(body))
            }
            Accounts::Update { account, fields } => {
                let id = self.id_in(&c, coll, &account)?;
                let body = self.account_body(fields, false)?;
                self.crud(&c, coll, Crud::Update(id, body))
            }
            Accounts::Delete { account } => {
                let id = self.id_in(&c, coll, &account)?;
                self.crud(&c, coll, Crud::Delete(id))
            }
            Accounts::Topup {
                account,
                amount,
                note,
            } => {
                check_amount("amount", &amount)?;
                let id = self.id_in(&c, coll, &account)?;
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
                let bal = v
                    .get("balance")
                    .map(|b| table::format_value(b, table::Fmt::Plain));
                let msg = match bal {
                    Some(b) => format!("account {id}: added {amount}; balance {b}"),
                    None => format!("account {id}: added {amount}"),
                };
                if self.g.json {
                    return self.print_json(&v);
                }
                self.say(&msg)
            }
        }
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

    fn rules(&mut self, r: Rules) -> Result<(), Error> {
        let c = self.client()?;
        match r {
            Rules::List { account } => {
                let id = self.resolve(&c, "/api/accounts", "name", "account", &account)?;
                let v = c.get(&format!("/api/accounts/{id}/rules"))?;
                self.list(&v, RULE_COLS)
            }
            Rules::Add { account, fields } => {
                let id = self.resolve(&c, "/api/accounts", "name", "account", &account)?;
                let body = self.rule_body(fields, false)?;
                if body.get("name").is_none() {
                    return Err(Error::Usage("a new rule needs --name".into()));
                }
                let v = c.json(
                    Method::Post,
                    &format!("/api/accounts/{id}/rules"),
                    &[],
                    Some(&body),
                )?;
                let msg = created("rule", &v);
                self.done(&v, &msg)
            }
            Rules::Update { rule, fields } => {
                let body = self.rule_body(fields, true)?;
                let v = c.json(Method::Put, &format!("/api/rules/{rule}"), &[], Some(&body))?;
                self.done(&v, &format!("updated rule {rule}"))
            }
            Rules::Delete { rule } => {
                let v = c.json(Method::Delete, &format!("/api/rules/{rule}"), &[], None)?;
                self.done(&v, &format!("deleted rule {rule}"))
            }
        }
    }

    fn rule_body(&mut self, f: RuleFields, update: bool) -> Result<Value, Error> {
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
        if update && m.is_empty() {
            return Err(Error::Usage(
                "nothing to change: give a field to set".into(),
            ));
        }
        Ok(Value::Object(m))
    }

    fn tariffs(&mut self, x: Tariffs) -> Result<(), Error> {
        let c = self.client()?;
        let coll = &TARIFFS;
        match x {
            Tariffs::List => self.crud(&c, coll, Crud::List),
            Tariffs::Get { tariff } => {
                let id = self.id_in(&c, coll, &tariff)?;
                self.crud(&c, coll, Crud::Get(id))
            }
            Tariffs::Create(f) => {
                let body = self.tariff_body(f, true)?;
                self.crud(&c, coll, Crud::Create(body))
            }
            Tariffs::Update { tariff, fields } => {
                let id = self.id_in(&c, coll, &tariff)?;
                let body = self.tariff_body(fields, false)?;
                self.crud(&c, coll, Crud::Update(id, body))
            }
            Tariffs::Delete { tariff } => {
                let id = self.id_in(&c, coll, &tariff)?;
                self.crud(&c, coll, Crud::Delete(id))
            }
        }
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

    fn connections(&mut self, x: Connections) -> Result<(), Error> {
        let c = self.client()?;
        let coll = &CONNECTIONS;
        match x {
            Connections::List => self.crud(&c, coll, Crud::List),
            Connections::Get { connection } => {
                let id = self.id_in(&c, coll, &connection)?;
                self.crud(&c, coll, Crud::Get(id))
            }
            Connections::Create(f) => {
                let body = self.connection_body(f, true)?;
                self.crud(&c, coll, Crud::Create(body))
            }
            Connections::Update { connection, fields } => {
                let id = self.id_in(&c, coll, &connection)?;
                let body = self.connection_body(fields, false)?;
                self.crud(&c, coll, Crud::Update(id, body))
            }
            Connections::Delete { connection } => {
                let id = self.id_in(&c, coll, &connection)?;
                self.crud(&c, coll, Crud::Delete(id))
            }
        }
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

    // ---- firewall, bans, calls, cdrs --------------------------------------------------

    fn firewall(&mut self, f: Firewall) -> Result<(), Error> {
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
            Firewall::List => {
                let v = c.get("/api/firewall")?;
                if self.g.json {
                    return self.print_json(&v);
                }
                let services = Table::from_json(
                    v.get("services").unwrap_or(&Value::Null),
                    &[
                        col("SERVICE", "service"),
                        col("PORT", "port"),
                        col("PROTO", "proto"),
                        col("RESTRICTED", "restricted"),
                        col("ALLOW", "allow"),
                    ],
                );
                let deny = Table::from_json(
                    v.get("deny").unwrap_or(&json!([])),
                    &[
                        col("DENY ID", "id"),
                        col("CIDR", "cidr"),
                        col("ORIGIN", "origin"),
                    ],
                );
                let entries = Table::from_json(
                    v.get("allow_entries").unwrap_or(&json!([])),
                    &[
                        col("ALLOW ENTRY", "service"),
                        col("CIDR", "cidr"),
                        col("ORIGIN", "origin"),
                    ],
                );
                let text = format!(
                    "{}\n{}\n{}",
                    services.render(),
                    entries.render(),
                    deny.render()
                );
                let _ = self.io.out.write_all(text.as_bytes());
                Ok(())
            }
            Firewall::Allow { service, cidr } => {
                let cidr = check_cidr("CIDR", &cidr)?;
                let body = json!({"service": service, "cidr": cidr});
                let v = c.json(Method::Post, "/api/firewall/allow", &[], Some(&body))?;
                self.done(&v, &format!("{service}: allowed {cidr}"))
            }
            Firewall::Disallow { service, cidr } => {
                let cidr = check_cidr("CIDR", &cidr)?;
                let body = json!({"service": service, "cidr": cidr});
                let v = c.json(Method::Delete, "/api/firewall/allow", &[], Some(&body))?;
                self.done(&v, &format!("{service}: no longer allows {cidr}"))
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
                if self.g.json {
                    return self.print_json(&v);
                }
                self.say(&msg)
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

    fn bans(&mut self, b: Bans) -> Result<(), Error> {
        let c = self.client()?;
        match b {
            Bans::List => {
                let v = c.get("/api/bans")?;
                self.list(
                    &v,
                    &[
                        col("ADDRESS", "addr"),
                        col("REASON", "reason"),
                        table::or_null("REMAINING SECS", "remaining_secs", "permanent"),
                        col("EXPIRED", "expired"),
                        col("STORED", "persistent"),
                        col("NOTE", "note"),
                    ],
                )
            }
            Bans::Add {
                addr,
                duration,
                reason,
            } => {
                let addr = check_ip("address", &addr)?;
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
                let addr = check_ip("address", &addr)?;
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

    fn calls(&mut self, x: Calls) -> Result<(), Error> {
        let c = self.client()?;
        match x {
            Calls::List => {
                let v = c.get("/api/calls")?;
                self.list(&v, CALL_COLS)
            }
            Calls::Hangup { id } => {
                let v = c.json(Method::Delete, &format!("/api/calls/{id}"), &[], None)?;
                self.done(&v, &format!("hung up call {id}"))
            }
        }
    }

    fn cdrs(&mut self, f: CdrFilter) -> Result<(), Error> {
        let c = self.client()?;
        let opt = |x: Option<u64>| x.map(|n| n.to_string()).unwrap_or_default();
        let when = |flag: &str, x: &Option<String>| -> Result<String, Error> {
            match x {
                Some(s) => table::parse_time(s)
                    .map(|ms| ms.to_string())
                    .map_err(|e| Error::Usage(format!("{flag}: {e}"))),
                None => Ok(String::new()),
            }
        };
        let q = [
            ("after", opt(f.after)),
            ("limit", opt(f.limit)),
            ("account", opt(f.account)),
            ("from_ms", when("--from", &f.from)?),
            ("to_ms", when("--to", &f.to)?),
            ("result", f.result.clone().unwrap_or_default()),
        ];
        if f.csv {
            let r = c.call(Method::Get, "/api/cdrs.csv", &q, None)?;
            let _ = self.io.out.write_all(&r.body);
            return Ok(());
        }
        let v = c.json(Method::Get, "/api/cdrs", &q, None)?;
        self.list(&v, CDR_COLS)?;
        if !self.g.json
            && let (Some(limit), Some(rows)) = (f.limit, v.as_array())
            && rows.len() as u64 >= limit
            && let Some(last) = rows
                .last()
                .and_then(|r| r.get("id"))
                .and_then(Value::as_u64)
        {
            let _ = writeln!(self.io.err, "more may follow: --after {last}");
        }
        Ok(())
    }

    // ---- staff, audit -----------------------------------------------------------------

    fn staff(&mut self, s: Staff) -> Result<(), Error> {
        let c = self.client()?;
        let id = |cx: &Self, t: &str| cx.resolve(&c, "/api/staff", "username", "staff user", t);
        match s {
            Staff::List => {
                let v = c.get("/api/staff")?;
                self.list(&v, STAFF_COLS)
            }
            Staff::Add {
                username,
                role,
                allowed_hosts,
                password_stdin,
                must_change_password,
            } => {
                let hosts = check_cidrs(&allowed_hosts)?;
                let password = self.new_password(password_stdin, "Password")?;
                let mut body = json!({"username": username, "role": role_name(&role),
                                  "password": password, "allowed_hosts": hosts});
                if let Some(m) = must_change_password {
                    body["must_change_password"] = m.into();
                }
                // 201 {"staff": StaffView, "strength": {…}}
                let v = c.json(Method::Post, "/api/staff", &[], Some(&body))?;
                if self.g.json {
                    return self.print_json(&v);
                }
                let staff = v.get("staff").unwrap_or(&v);
                let msg = created("staff user", staff);
                self.say(&msg)?;
                let _ = self.io.out.write_all(table::key_values(staff).as_bytes());
                self.strength(v.get("strength"))
            }
            Staff::Update {
                user,
                role,
                enabled,
                allowed_hosts,
                any_host,
            } => {
                let id = id(self, &user)?;
                let mut m = Map::new();
                set(&mut m, "role", role.as_deref().map(role_name));
                set_enabled(&mut m, &enabled);
                if any_host {
                    m.insert("allowed_hosts".into(), json!([]));
                } else if !allowed_hosts.is_empty() {
                    m.insert("allowed_hosts".into(), json!(check_cidrs(&allowed_hosts)?));
                }
                if m.is_empty() {
                    return Err(Error::Usage(
                        "nothing to change: give --role, --enable/--disable or --allowed-host"
                            .into(),
                    ));
                }
                let v = c.json(
                    Method::Put,
                    &format!("/api/staff/{id}"),
                    &[],
                    Some(&Value::Object(m)),
                )?;
                self.done(&v, &format!("updated staff user {id}"))
            }
            Staff::Delete { user } => {
                let id = id(self, &user)?;
                let v = c.json(Method::Delete, &format!("/api/staff/{id}"), &[], None)?;
                self.done(&v, &format!("deleted staff user {id}"))
            }
            Staff::Revoke { user } => {
                let id = id(self, &user)?;
                let v = c.json(Method::Post, &format!("/api/staff/{id}/revoke"), &[], None)?;
                self.done(&v, &format!("revoked every session of staff user {id}"))
            }
            Staff::Password {
                user,
                password_stdin,
            } => {
                let id = id(self, &user)?;
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
                let id = id(self, &user)?;
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

    fn audit(&mut self, a: Audit) -> Result<(), Error> {
        let c = self.client()?;
        let when = |flag: &str, x: &Option<String>| -> Result<String, Error> {
            match x {
                Some(s) => table::parse_time(s)
                    .map(|ms| ms.to_string())
                    .map_err(|e| Error::Usage(format!("{flag}: {e}"))),
                None => Ok(String::new()),
            }
        };
        let q = [
            ("after", a.after.map(|n| n.to_string()).unwrap_or_default()),
            ("user", a.user.clone().unwrap_or_default()),
            ("kind", a.kind.clone().unwrap_or_default()),
            ("from_ms", when("--from", &a.from)?),
            ("to_ms", when("--to", &a.to)?),
            ("limit", a.limit.map(|n| n.to_string()).unwrap_or_default()),
        ];
        let v = c.json(Method::Get, "/api/audit", &q, None)?;
        self.list(&v, AUDIT_COLS)
    }
}

const ACCOUNT_COLS: &[table::Col] = &[
    col("ID", "id"),
    col("NAME", "name"),
    col("ENABLED", "enabled"),
    col("TARIFF", "tariff"),
    col("BALANCE", "balance"),
    col("CPS", "cps_limit"),
    col("SESSIONS", "max_sessions"),
    col("MAX SECS", "max_call_secs"),
    col("SIP USER", "sip.username"),
];
const RULE_COLS: &[table::Col] = &[
    col("ID", "id"),
    col("ACCOUNT", "account_id"),
    col("NAME", "name"),
    col("REMOTE", "remote"),
    col("CLI", "cli"),
    col("CLD", "cld"),
    col("IP ONLY", "ip_only"),
];
const TARIFF_COLS: &[table::Col] = &[
    col("ID", "id"),
    col("NAME", "name"),
    col("RATE/MIN", "rate_per_minute"),
    col("EXPECTED SECS", "expected_call_secs"),
    col("INITIAL SECS", "initial_increment_secs"),
    col("INCREMENT SECS", "increment_secs"),
];
const CONNECTION_COLS: &[table::Col] = &[
    col("ID", "id"),
    col("NAME", "name"),
    col("ENABLED", "enabled"),
    col("DESTINATION", "destination"),
    col("TRANSPORT", "transport"),
    col("CLD PREFIXES", "cld_prefixes"),
    col("CHANNELS", "max_channels"),
    col("CPS", "cps_limit"),
    col("PRIORITY", "priority"),
];
const CALL_COLS: &[table::Col] = &[
    col("ID", "id"),
    col("CALL-ID", "call_id"),
    col("ACCOUNT", "account_id"),
    col("CLI", "cli"),
    col("CLD", "cld"),
    col("SOURCE", "source"),
    col("CONNECTION", "connection_id"),
    col("ANSWERED", "answered"),
    time("STARTED (UTC)", "started_ms"),
];
const CDR_COLS: &[table::Col] = &[
    col("ID", "id"),
    time("START (UTC)", "start_ms"),
    col("CALLER", "caller"),
    col("CALLEE", "callee"),
    col("ACCOUNT", "account_id"),
    col("CONNECTION", "connection_id"),
    col("RESULT", "result_code"),
    col("REASON", "reason"),
    col("SECS", "duration_secs"),
    col("COST", "cost"),
];
const ALERT_COLS: &[table::Col] = &[
    col("SEVERITY", "severity"),
    col("CODE", "code"),
    col("MESSAGE", "message"),
];
const STAFF_COLS: &[table::Col] = &[
    col("ID", "id"),
    col("USERNAME", "username"),
    col("ROLE", "role"),
    col("ENABLED", "enabled"),
    col("TOTP", "totp"),
    col("ALLOWED HOSTS", "allowed_hosts"),
    time("CREATED (UTC)", "created_ms"),
];
const AUDIT_COLS: &[table::Col] = &[
    col("ID", "id"),
    time("TIME (UTC)", "ts_ms"),
    col("ACTOR", "actor"),
    col("SOURCE", "source"),
    col("KIND", "kind"),
    col("TARGET", "target"),
    col("RESULT", "result"),
    col("REASON", "reason"),
];

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

fn set<T: Into<Value>>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v.into());
    }
}

fn set_enabled(m: &mut Map<String, Value>, e: &Enabled) {
    if e.enable {
        m.insert("enabled".into(), true.into());
    } else if e.disable {
        m.insert("enabled".into(), false.into());
    }
}

fn finish_body(m: Map<String, Value>, create: bool, what: &str) -> Result<Value, Error> {
    if create && !m.contains_key("name") {
        return Err(Error::Usage(format!("a new {what} needs --name")));
    }
    if !create && m.is_empty() {
        return Err(Error::Usage(
            "nothing to change: give a field to set".into(),
        ));
    }
    Ok(Value::Object(m))
}

/// A resource the API serves with list, get, create, update and delete under one path.
struct Coll {
    path: &'static str,
    /// What it is called in messages and "no … named" errors.
    kind: &'static str,
    cols: &'static [table::Col],
}

const ACCOUNTS: Coll = Coll {
    path: "/api/accounts",
    kind: "account",
    cols: ACCOUNT_COLS,
};
const TARIFFS: Coll = Coll {
    path: "/api/tariffs",
    kind: "tariff",
    cols: TARIFF_COLS,
};
const CONNECTIONS: Coll = Coll {
    path: "/api/connections",
    kind: "connection",
    cols: CONNECTION_COLS,
};

enum Crud {
    List,
    Get(u64),
    Create(Value),
    Update(u64, Value),
    Delete(u64),
}

fn created(what: &str, v: &Value) -> String {
    match v.get("id") {
        Some(id) => format!("created {what} {id}"),
        None => format!("created {what}"),
    }
}

fn role_name(r: &str) -> &str {
    if r == "readonly" { "read-only" } else { r }
}

/// A decimal amount: digits, an optional fraction of up to six digits, an optional sign.
pub fn check_amount(flag: &str, s: &str) -> Result<(), Error> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    let ok = !int.is_empty()
        && all_digits(int)
        && all_digits(frac)
        && frac.len() <= 6
        && (!digits.contains('.') || !frac.is_empty());
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{flag}: {s:?} is not a decimal amount like 12.50 (at most 6 decimals)"
        )))
    }
}

/// A CIDR, or a bare address (made /32 or /128).
pub fn check_cidr(what: &str, s: &str) -> Result<String, Error> {
    let s = s.trim();
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        if n.trunc() != n {
            return Err(Error::Usage(format!(
                "{what}: {s} has host bits set; did you mean {}?",
                n.trunc()
            )));
        }
        return Ok(n.to_string());
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(ipnet::IpNet::from(a).to_string());
    }
    Err(Error::Usage(format!(
        "{what}: {s:?} is not an address or CIDR (e.g. 192.0.2.0/24, 2001:db8::/32)"
    )))
}

fn check_cidrs(list: &[String]) -> Result<Vec<String>, Error> {
    list.iter()
        .map(|c| check_cidr("--allowed-host", c))
        .collect()
}

fn check_ip(what: &str, s: &str) -> Result<String, Error> {
    s.trim()
        .parse::<IpAddr>()
        .map(|a| a.to_string())
        .map_err(|_| Error::Usage(format!("{what}: {s:?} is not an IP address")))
}

fn check_host_port(flag: &str, s: &str) -> Result<(), Error> {
    let ok = s
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{flag}: {s:?} is not HOST:PORT (e.g. 192.0.2.10:5060, [2001:db8::1]:5060)"
        )))
    }
}

/// The token file path for this environment (for messages and tests).
pub fn token_file(env: &Env) -> Option<PathBuf> {
    env.config_dir.as_deref().map(token::token_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        for ok in ["0", "12", "12.5", "12.50", "-3.000001", "0.012"] {
            check_amount("x", ok).unwrap();
        }
        for bad in [
            "",
            "1.",
            ".5",
            "1,50",
            "1.0000001",
            "abc",
            "--1",
            "1e3",
            "+1",
        ] {
            assert!(check_amount("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(check_cidr("x", "10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert_eq!(check_cidr("x", "192.0.2.1").unwrap(), "192.0.2.1/32");
        assert_eq!(check_cidr("x", "2001:db8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(check_cidr("x", "::1").unwrap(), "::1/128");
        let e = check_cidr("x", "10.1.2.3/8").unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        assert!(check_cidr("x", "10.0.0.0/33").is_err());
        assert!(check_cidr("x", "host").is_err());
    }

    #[test]
    fn host_ports() {
        check_host_port("x", "192.0.2.1:5060").unwrap();
        check_host_port("x", "[2001:db8::1]:5060").unwrap();
        check_host_port("x", "vendor.example:5080").unwrap();
        for bad in ["192.0.2.1", ":5060", "h:0", "h:70000", "h:x"] {
            assert!(check_host_port("x", bad).is_err(), "{bad}");
        }
    }
}
