//! The session: which server, which certificate, which token; logging in and out, and the
//! user's own password and TOTP.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::Ctx;
use crate::api::{self, Client, Error, Method};
use crate::cli::{DEFAULT_URL, Login, Totp};
use crate::table;
use crate::token::{self, Saved};

impl Ctx<'_, '_> {
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

    /// The CA file given now: `--ca`, else `SBC_CA`.
    fn ca_given(&self) -> Option<PathBuf> {
        self.g.ca.clone().or_else(|| self.env.ca.clone())
    }

    fn options(&self, url: &str) -> api::Options {
        let saved = self.saved_for(url);
        api::Options {
            url: url.to_owned(),
            insecure: self.g.insecure || saved.is_some_and(|s| s.insecure),
            ca: self.ca_given().or_else(|| saved.and_then(|s| s.ca.clone())),
            allow_http: self.g.allow_http,
            timeout: Duration::from_secs(self.g.timeout.max(1)),
        }
    }

    /// A client with the session's token: `SBC_TOKEN`, else the saved one for this URL.
    pub(super) fn client(&self) -> Result<Client, Error> {
        let (opts, token) = self.session()?;
        Client::new(&opts, Some(token))
    }

    /// Where to connect and the session's token (`SBC_TOKEN`, else the saved one for this
    /// URL): what a client, or the event stream, needs.
    pub(super) fn session(&self) -> Result<(api::Options, String), Error> {
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
        Ok((self.options(&url), token))
    }

    /// Who this session belongs to.
    pub(super) fn me(&mut self) -> Result<(), Error> {
        self.show_get("/api/me")
    }

    pub(super) fn login(&mut self, l: Login) -> Result<(), Error> {
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
        if let Some(t) = &l.email_code {
            body["email_code"] = t.trim().into();
        }
        let v = self.login_request(&client, body, l.totp.is_none() && l.email_code.is_none())?;
        let Some(tok) = v.get("token").and_then(Value::as_str).map(str::to_owned) else {
            return Err(Error::Transport("the login reply has no token".to_owned()));
        };
        let saved_to = if l.no_save {
            None
        } else {
            Some(self.save_session(&client, &tok, &username, &v)?)
        };
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
        self.tell_musts(&v);
        Ok(())
    }

    /// `POST /api/login`; asks for the TOTP code once if the server wants one and it may ask.
    fn login_request(
        &mut self,
        client: &Client,
        mut body: Value,
        may_ask: bool,
    ) -> Result<Value, Error> {
        let mut asked = false;
        loop {
            match client.json(Method::Post, "/api/login", &[], Some(&body)) {
                Ok(v) => return Ok(v),
                Err(Error::Api(e)) if e.code == "totp_required" && may_ask && !asked => {
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
                Err(Error::Api(e)) if e.code == "email_code_sent" && may_ask && !asked => {
                    asked = true;
                    match self.io.prompt.line("Code from your email: ") {
                        Ok(code) => body["email_code"] = code.trim().into(),
                        Err(_) => {
                            return Err(Error::Api(api::ApiError {
                                message: format!("{}; pass --email-code CODE", e.message),
                                ..e
                            }));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `PUT /api/me/email`: the caller's address and email codes, with their password.
    pub(super) fn email(
        &mut self,
        address: Option<String>,
        remove: bool,
        codes: Option<bool>,
        stdin: bool,
    ) -> Result<(), Error> {
        if address.is_none() && !remove && codes.is_none() {
            return Err(Error::Usage(
                "nothing to change: give an address, --remove or --codes".into(),
            ));
        }
        let client = self.client()?;
        let password = if stdin {
            self.stdin_line("password")?
        } else {
            self.ask("Password: ", true)?
        };
        let mut body = json!({"password": password});
        if let Some(a) = address {
            body["email"] = a.into();
        } else if remove {
            body["email"] = Value::Null;
        }
        if let Some(c) = codes {
            body["email_codes"] = c.into();
        }
        let v = client.json(Method::Put, "/api/me/email", &[], Some(&body))?;
        if self.g.json {
            return self.print_json(&v);
        }
        let email = v.get("email").and_then(Value::as_str).unwrap_or("none");
        let codes = v.get("email_codes").and_then(Value::as_bool) == Some(true);
        self.say(&format!(
            "email: {email}; email codes at login: {}",
            if codes { "on" } else { "off" }
        ))
    }

    /// Saves the new session with the TLS choice given now, so later commands need no flags;
    /// returns the token file.
    fn save_session(
        &self,
        client: &Client,
        tok: &str,
        username: &str,
        reply: &Value,
    ) -> Result<PathBuf, Error> {
        let dir = self.env.config_dir.clone().ok_or_else(|| {
            Error::Local(
                "no config directory (set HOME or XDG_CONFIG_HOME), or use --no-save".into(),
            )
        })?;
        // Absolute, as later commands may run from another directory.
        let ca = self
            .ca_given()
            .map(|p| std::path::absolute(&p).unwrap_or(p));
        let s = Saved {
            url: client.base().to_owned(),
            token: tok.to_owned(),
            username: Some(username.to_owned()),
            expires_ms: reply.get("expires_ms").and_then(Value::as_u64),
            ca,
            insecure: self.g.insecure,
        };
        token::save(&dir, &s)
    }

    /// What the login reply says the user must do before anything else, on stderr.
    fn tell_musts(&mut self, reply: &Value) {
        for m in reply
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
        if reply.get("setup_only").and_then(Value::as_bool) == Some(true) {
            let _ = writeln!(
                self.io.err,
                "this session can only finish setup until that is done"
            );
        }
    }

    pub(super) fn logout(&mut self, all: bool) -> Result<(), Error> {
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

    pub(super) fn password(&mut self, stdin: bool) -> Result<(), Error> {
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

    pub(super) fn totp(&mut self, t: Totp) -> Result<(), Error> {
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
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}
