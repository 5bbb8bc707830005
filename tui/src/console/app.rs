//! The app: routes keys to the screen in front (through the key map), turns actions into
//! requests, applies what the data source hands back, and draws the frame around the screen
//! (tabs and link state on top, notices and the key bar below, help and confirmations over).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::action::{Action, Link, Reply, Request, ScreenId, Update};
use super::clock::Clock;
use super::data::Data;
use super::keymap::{self, Command, Key, Scope};
use super::screens::Screen;
use super::screens::accounts::Accounts;
use super::screens::alerts::Alerts;
use super::screens::audit::Audit;
use super::screens::bans::Bans;
use super::screens::calls::Calls;
use super::screens::cdrs::Cdrs;
use super::screens::dashboard::Dashboard;
use super::screens::firewall::Firewall;
use super::screens::login::Login;
use super::screens::staff::Staff;
use super::source::DataSource;
use super::ui;

/// How often the status (coverage, CDR writer) is asked for again.
const STATUS_EVERY_MS: u64 = 5_000;
/// How often the screen in front is reloaded in full (the stream keeps it current between).
const RELOAD_EVERY_MS: u64 = 15_000;
/// The same without an event stream ([`Link::Polling`]).
const POLL_EVERY_MS: u64 = 3_000;
/// Most events held while paused (about an hour of a busy box's stream).
const HOLD_MAX: usize = 20_000;
/// Smallest area the frame is drawn in; below it a one-line note says "too small".
const MIN_W: u16 = 30;
const MIN_H: u16 = 8;
/// A read asked longer ago than this without an answer is asked again (a lost answer must
/// not stop the refreshes for good).
const IN_FLIGHT_MS: u64 = 60_000;

/// The console.
pub struct App<S: DataSource, C: Clock> {
    source: S,
    clock: C,
    /// What is known of the daemon.
    pub data: Data,
    /// The screen in front.
    pub screen: ScreenId,
    dashboard: Dashboard,
    /// The calls screen (public for tests).
    pub calls: Calls,
    bans: Bans,
    firewall: Firewall,
    accounts: Accounts,
    cdrs: Cdrs,
    audit: Audit,
    alerts: Alerts,
    staff: Staff,
    /// The login form, while not logged in.
    pub login: Option<Login>,
    /// The help is shown.
    pub help: bool,
    /// The live view is frozen; updates wait in `held`.
    pub paused: bool,
    held: Vec<Update>,
    /// Events were thrown away while paused (more than [`HOLD_MAX`]): reload on thaw.
    held_lost: bool,
    /// A question waiting for `y`.
    pub confirm: Option<(String, Request)>,
    /// Something to read before going on (a new user's first password): title and lines;
    /// any key closes it.
    pub info: Option<(String, Vec<String>)>,
    /// The last notice (result of an action, an error).
    pub notice: Option<String>,
    quit: bool,
    url: String,
    /// Reads sent and not answered yet, with when: a slow daemon gets one of each at a
    /// time instead of a queue that grows every tick.
    in_flight: Vec<(Request, u64)>,
    /// A poll failed while there is no event stream: shown as disconnected until a poll
    /// answers again.
    polling_lost: bool,
    last_status_ms: u64,
    last_reload_ms: u64,
}

impl<S: DataSource, C: Clock> App<S, C> {
    /// A console for `url`; `logged_in` when a saved session is used (a 401 brings the
    /// login form back), else the login form shows first.
    pub fn new(source: S, clock: C, url: &str, logged_in: bool, username: Option<&str>) -> Self {
        let mut app = App {
            source,
            clock,
            data: Data::default(),
            screen: ScreenId::Dashboard,
            dashboard: Dashboard,
            calls: Calls::default(),
            bans: Bans::default(),
            firewall: Firewall::default(),
            accounts: Accounts::default(),
            cdrs: Cdrs::default(),
            audit: Audit::default(),
            alerts: Alerts::default(),
            staff: Staff::default(),
            login: (!logged_in).then(|| Login::new(url, username)),
            help: false,
            paused: false,
            held: Vec::new(),
            held_lost: false,
            confirm: None,
            info: None,
            notice: None,
            quit: false,
            url: url.to_owned(),
            in_flight: Vec::new(),
            polling_lost: false,
            last_status_ms: 0,
            last_reload_ms: 0,
        };
        if logged_in {
            app.reload_all();
        }
        app
    }

    /// The data source (tests read what was sent).
    pub fn source(&mut self) -> &mut S {
        &mut self.source
    }

    /// Whether `q` was pressed.
    pub fn should_quit(&self) -> bool {
        self.quit
    }

    fn screen_mut(&mut self) -> (&mut dyn Screen, &Data) {
        let s: &mut dyn Screen = match self.screen {
            ScreenId::Dashboard => &mut self.dashboard,
            ScreenId::Calls => &mut self.calls,
            ScreenId::Bans => &mut self.bans,
            ScreenId::Firewall => &mut self.firewall,
            ScreenId::Accounts => &mut self.accounts,
            ScreenId::Cdrs => &mut self.cdrs,
            ScreenId::Audit => &mut self.audit,
            ScreenId::Alerts => &mut self.alerts,
            ScreenId::Staff => &mut self.staff,
        };
        (s, &self.data)
    }

    fn reload_all(&mut self) {
        let now = self.clock.now_ms();
        self.last_status_ms = now;
        self.last_reload_ms = now;
        let mut reqs = vec![Request::Status, Request::Alerts];
        if self.data.role.is_none() {
            reqs.insert(0, Request::Me);
        }
        let (s, d) = self.screen_mut();
        reqs.extend(s.refresh(d));
        reqs.dedup();
        for r in reqs {
            self.send(r);
        }
    }

    fn show(&mut self, id: ScreenId) {
        if self.screen != id {
            self.screen = id;
            let (s, d) = self.screen_mut();
            for r in s.refresh(d) {
                self.send(r);
            }
        }
    }

    /// Whether the user's role allows a key: a read-only user changes nothing on the daemon.
    pub fn may(&self, b: &keymap::Binding) -> bool {
        let role = self.data.role.as_deref();
        let read_only = b.destructive && role == Some("read-only");
        let not_admin = b.admin && role.is_some_and(|r| r != "admin");
        !(read_only || not_admin)
    }

    /// One key from the terminal.
    pub fn handle_key(&mut self, ev: KeyEvent) {
        if ev.modifiers.contains(KeyModifiers::CONTROL) && ev.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if let Some(login) = self.login.as_mut() {
            let a = login.input(ev);
            if let Some(a) = a {
                self.act(a);
            }
            return;
        }
        if let Some((_, req)) = self.confirm.take() {
            match ev.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => self.act(Action::Send(req)),
                _ => self.notice = Some("cancelled".into()),
            }
            return;
        }
        if self.info.take().is_some() {
            return;
        }
        if self.help {
            self.help = false;
            return;
        }
        let (s, d) = self.screen_mut();
        if s.editing() {
            if let Some(a) = s.input(ev, d) {
                self.act(a);
            }
            return;
        }
        let Some(key) = Key::from_event(ev) else {
            return;
        };
        let mut scopes = s.scopes();
        scopes.push(Scope::Global);
        let Some(binding) = keymap::find(&scopes, key) else {
            return;
        };
        if !self.may(binding) {
            self.notice = Some(format!(
                "{}: not allowed for your role ({})",
                binding.short,
                self.data.role.as_deref().unwrap_or("?")
            ));
            return;
        }
        let cmd = binding.command;
        let (s, d) = self.screen_mut();
        let a = match cmd {
            Command::Quit => Some(Action::Quit),
            Command::Help => Some(Action::ToggleHelp),
            Command::Pause => Some(Action::TogglePause),
            Command::NextScreen => Some(Action::Cycle(true)),
            Command::PrevScreen => Some(Action::Cycle(false)),
            Command::Screen(n) => ScreenId::ALL
                .get(usize::from(n) - 1)
                .copied()
                .map(Action::Show),
            Command::Refresh => {
                self.reload_all();
                None
            }
            other => s.command(other, d),
        };
        if let Some(a) = a {
            self.act(a);
        }
    }

    /// Carries out an action.
    pub fn act(&mut self, a: Action) {
        match a {
            Action::Quit => self.quit = true,
            Action::Show(id) => self.show(id),
            Action::Cycle(fwd) => {
                let n = ScreenId::ALL.len();
                let i = ScreenId::ALL
                    .iter()
                    .position(|s| *s == self.screen)
                    .unwrap_or(0);
                let next = if fwd { (i + 1) % n } else { (i + n - 1) % n };
                self.show(ScreenId::ALL[next]);
            }
            Action::ToggleHelp => self.help = !self.help,
            Action::TogglePause => {
                self.paused = !self.paused;
                if !self.paused {
                    for u in std::mem::take(&mut self.held) {
                        self.apply(u);
                    }
                    if std::mem::take(&mut self.held_lost) {
                        self.notice = Some("paused a long time: everything asked again".into());
                        self.reload_all();
                    }
                }
            }
            Action::Send(r) => self.send(r),
            Action::Confirm { prompt, request } => self.confirm = Some((prompt, request)),
            Action::Ack(id) => self.send(Request::AckAlert(id)),
            Action::Notice(n) => self.notice = Some(n),
        }
    }

    /// Takes what the source has, and asks again for what is due. Call it often (the
    /// binary calls it between key polls).
    pub fn tick(&mut self) {
        for u in self.source.poll() {
            let live = matches!(u, Update::Event(_));
            if self.paused && live {
                // A pause left on overnight must not grow without end: past the bound the
                // events are dropped and the thaw asks for everything again.
                if self.held.len() >= HOLD_MAX {
                    self.held.clear();
                    self.held_lost = true;
                }
                self.held.push(u);
            } else {
                self.apply(u);
            }
        }
        if self.login.is_some() || self.paused {
            return;
        }
        let now = self.clock.now_ms();
        let every = if self.data.link == Some(Link::Polling) {
            POLL_EVERY_MS
        } else {
            RELOAD_EVERY_MS
        };
        if now.saturating_sub(self.last_reload_ms) >= every {
            self.reload_all();
        } else if now.saturating_sub(self.last_status_ms) >= STATUS_EVERY_MS {
            self.last_status_ms = now;
            self.send(Request::Status);
        }
    }

    /// Sends a request, unless it is a read whose answer is still coming.
    fn send(&mut self, r: Request) {
        if r.is_read() {
            let now = self.clock.now_ms();
            self.in_flight
                .retain(|(_, at)| now.saturating_sub(*at) < IN_FLIGHT_MS);
            if self.in_flight.iter().any(|(p, _)| p.same_read(&r)) {
                return;
            }
            self.in_flight.push((r.clone(), now));
        }
        self.source.send(r);
    }

    fn apply(&mut self, u: Update) {
        if let Update::Reply(req, _) = &u
            && let Some(i) = self.in_flight.iter().position(|(p, _)| p.same_read(req))
        {
            self.in_flight.remove(i);
        }
        match u {
            Update::Event(ev) => self.data.apply(ev),
            Update::Link(l) => {
                if l != Link::Idle && matches!(self.data.link, Some(Link::Disconnected(_))) {
                    // Back after a restart: what happened meanwhile came without events.
                    self.data.link = Some(l);
                    self.reload_all();
                    return;
                }
                self.data.link = Some(l);
            }
            Update::Reply(req, Err(f)) => {
                if f.needs_login() {
                    let url = self.url.clone();
                    let login = self.login.get_or_insert_with(|| Login::new(&url, None));
                    if matches!(req, Request::Login { .. }) {
                        login.failed(f.message);
                    } else {
                        login.error = Some("the session ended; log in again".into());
                    }
                    return;
                }
                let msg = if f.forbidden() {
                    format!("not allowed for your role: {}", f.message)
                } else {
                    f.message
                };
                let d = &mut self.data;
                match req {
                    Request::Login { .. } => {
                        if let Some(l) = self.login.as_mut() {
                            l.failed(msg);
                        }
                    }
                    Request::Status => {
                        // Without a stream only the polls see the daemon go away.
                        if f.status.is_none() && d.link == Some(Link::Polling) {
                            d.link = Some(Link::Disconnected(msg.clone()));
                            self.polling_lost = true;
                        }
                        d.status.error = Some(msg)
                    }
                    Request::Me => self.notice = Some(format!("who am I: {msg}")),
                    Request::Calls => d.calls.error = Some(msg),
                    Request::Messages(_) => d.messages.error = Some(msg),
                    Request::Bans => d.bans.error = Some(msg),
                    Request::NeverBans => d.never.error = Some(msg),
                    Request::Alerts => d.alerts.error = Some(msg),
                    Request::AckAlert(id) => {
                        self.notice = Some(format!("acknowledging {id} failed: {msg}"))
                    }
                    Request::Audit { .. } => d.audit.error = Some(msg),
                    Request::Firewall => d.firewall.error = Some(msg),
                    Request::Accounts => d.accounts.error = Some(msg),
                    Request::Cdrs(_) => d.cdrs.error = Some(msg),
                    Request::Staff => d.staff.error = Some(msg),
                    Request::StaffCreate { username, .. } => {
                        self.notice = Some(format!("creating {username:?} failed: {msg}"))
                    }
                    Request::StaffUpdate { username, .. }
                    | Request::StaffRevoke { username, .. }
                    | Request::StaffTotpReset { username, .. } => {
                        self.notice = Some(format!("change to {username:?} failed: {msg}"))
                    }
                    Request::AllowAdd { .. }
                    | Request::AllowRemove { .. }
                    | Request::DenyAdd(_)
                    | Request::DenyRemove(_) => {
                        self.notice = Some(format!("firewall change failed: {msg}"))
                    }
                    Request::Hangup(id) => {
                        self.notice = Some(format!("hang-up of #{id} failed: {msg}"))
                    }
                    Request::Ban { addr, .. } => {
                        self.notice = Some(format!("ban of {addr} failed: {msg}"))
                    }
                    Request::Unban(p) => self.notice = Some(format!("unban of {p} failed: {msg}")),
                }
            }
            Update::Reply(req, Ok(r)) => self.reply(req, r),
        }
    }

    fn reply(&mut self, req: Request, r: Reply) {
        let d = &mut self.data;
        match r {
            Reply::LoggedIn(ok) => {
                if ok.setup_only {
                    if let Some(l) = self.login.as_mut() {
                        l.failed("this account must first enrol TOTP or change its password: use `sbcctl login`".into());
                    }
                    return;
                }
                d.role = Some(ok.role);
                self.login = None;
                self.reload_all();
            }
            Reply::Me(me) => d.role = Some(me.role),
            Reply::Status(s) => {
                d.status.set(Some(s));
                if std::mem::take(&mut self.polling_lost)
                    && matches!(d.link, Some(Link::Disconnected(_)))
                {
                    d.link = Some(Link::Polling);
                    self.reload_all();
                }
            }
            Reply::Calls(c) => d.calls.set(c),
            Reply::Messages(m) => d.messages.set(Some(m)),
            Reply::Bans(b) => d.bans.set(b),
            Reply::NeverBans(n) => d.never.set(n),
            Reply::Alerts(a) => d.alerts.set(a),
            Reply::Firewall(v) => d.firewall.set(Some(v)),
            Reply::Accounts(a, c) => d.accounts.set((a, c)),
            Reply::Cdrs(c) => {
                // An answer to filters changed since is not what the screen shows.
                if req == Request::Cdrs(self.cdrs.query.clone()) {
                    d.cdrs.set(c);
                }
            }
            Reply::Staff(s) => d.staff.set(s),
            Reply::StaffCreated(c) => {
                let mut lines = vec![format!("{} {:?} created.", c.role, c.username)];
                if let Some(pw) = &c.password {
                    lines.push(String::new());
                    lines.push(format!("First password:  {pw}"));
                    lines.push(String::new());
                    lines.push("Shown once: give it to them now, by a safe channel.".into());
                }
                lines.push(format!(
                    "They must change it at first login{} (sbcctl login).",
                    if c.role == "admin" {
                        ", and enrol TOTP: the QR and secret are shown to them then"
                    } else {
                        ""
                    }
                ));
                if !c.strength.is_empty() {
                    lines.push(format!("Password strength: {}", c.strength));
                }
                self.info = Some(("New staff user".into(), lines));
                self.notice = Some(format!("staff user {:?} created", c.username));
                self.send(Request::Staff);
            }
            Reply::Audit(entries) => {
                let last = d.last_audit_id();
                d.audit
                    .value
                    .extend(entries.into_iter().filter(|e| e.id > last));
                let over = d.audit.value.len().saturating_sub(super::data::AUDIT_KEEP);
                d.audit.value.drain(..over);
                d.audit.loaded = true;
                d.audit.error = None;
            }
            Reply::Done => {
                let (notice, again) = match req {
                    Request::Hangup(id) => (format!("call #{id} hung up"), Request::Calls),
                    Request::Ban { addr, .. } => (format!("{addr} banned"), Request::Bans),
                    Request::Unban(p) => (format!("{p} unbanned"), Request::Bans),
                    Request::AckAlert(id) => (format!("alert {id} acknowledged"), Request::Alerts),
                    Request::AllowAdd { service, cidr } => {
                        (format!("{cidr} allowed to {service}"), Request::Firewall)
                    }
                    Request::AllowRemove { service, cidr } => (
                        format!("{cidr} removed from {service}'s allow list"),
                        Request::Firewall,
                    ),
                    Request::DenyAdd(c) => (format!("{c} denied"), Request::Firewall),
                    Request::DenyRemove(id) => {
                        (format!("deny entry #{id} removed"), Request::Firewall)
                    }
                    Request::StaffUpdate {
                        username,
                        role,
                        enabled,
                        ..
                    } => {
                        let what = match (role, enabled) {
                            (Some(r), _) => format!("is now {r}"),
                            (None, Some(true)) => "enabled".into(),
                            _ => "disabled".into(),
                        };
                        (format!("{username:?} {what}"), Request::Staff)
                    }
                    Request::StaffRevoke { username, .. } => (
                        format!("every session of {username:?} ended"),
                        Request::Staff,
                    ),
                    Request::StaffTotpReset { username, .. } => {
                        (format!("TOTP of {username:?} removed"), Request::Staff)
                    }
                    _ => return,
                };
                self.notice = Some(notice);
                self.send(again);
            }
        }
    }

    /// Draws the whole frame.
    pub fn draw(&mut self, f: &mut Frame) {
        let area = f.area();
        if area.width < MIN_W || area.height < MIN_H {
            f.render_widget(
                Paragraph::new(vec![
                    Line::styled("sbc-tui", ui::strong()),
                    Line::raw(format!("{}x{}: too small", area.width, area.height)),
                ]),
                area,
            );
            return;
        }
        let [top, body, note, bar] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(area);
        f.render_widget(Paragraph::new(self.tabs_line(top.width)), top);
        let now = self.clock.now_ms();
        if let Some(login) = &self.login {
            login.draw(f, body);
            f.render_widget(
                Paragraph::new(ui::key_bar(&[
                    ("Tab".into(), "next field", true),
                    ("Enter".into(), "log in", true),
                    ("Esc".into(), "quit", true),
                ])),
                bar,
            );
            return;
        }
        let scopes = {
            let (s, d) = self.screen_mut();
            s.draw(f, body, d, now);
            let mut sc = s.scopes();
            sc.push(Scope::Global);
            sc
        };
        f.render_widget(Paragraph::new(self.note_line()), note);
        let keys: Vec<(String, &str, bool)> = keymap::bar(&scopes)
            .into_iter()
            .map(|(k, b)| (k.label(), b.short, self.may(b)))
            .collect();
        f.render_widget(Paragraph::new(ui::key_bar(&keys)), bar);
        if self.help {
            draw_help(f, area, &scopes);
        }
        if let Some((title, text)) = &self.info {
            ui::popup(
                f,
                body,
                title,
                text.iter()
                    .map(|l| Line::raw(l.clone()))
                    .chain([Line::styled("any key closes", ui::dim())])
                    .collect(),
            );
        }
        if let Some((prompt, _)) = &self.confirm {
            ui::popup(
                f,
                body,
                "Confirm",
                prompt
                    .lines()
                    .map(|l| Line::styled(l.to_owned(), ui::strong()))
                    .chain([Line::raw("y: yes · any other key: no")])
                    .collect(),
            );
        }
    }

    fn tabs_line(&self, width: u16) -> Line<'static> {
        let mut spans = vec![Span::styled(" sbc-tui ", ui::strong())];
        if self.login.is_none() {
            let narrow = width < 120;
            for (i, s) in ScreenId::ALL.iter().enumerate() {
                let admin_only =
                    s.admin_only() && self.data.role.as_deref().is_some_and(|r| r != "admin");
                let style = if *s == self.screen {
                    ui::selected()
                } else if admin_only {
                    ui::dim()
                } else {
                    ui::Style::default()
                };
                let name = if narrow { s.short() } else { s.title() };
                let text = if narrow {
                    format!("{}{name} ", i + 1)
                } else {
                    format!(" {} {name} ", i + 1)
                };
                spans.push(Span::styled(text, style));
            }
        }
        let state = match (&self.data.link, self.paused) {
            (_, true) => Span::styled(" PAUSED (p) ", ui::selected()),
            (Some(Link::Connected), _) => Span::styled(" ● live ", ui::strong()),
            (Some(Link::Disconnected(_)), _) => Span::styled(
                " ○ DISCONNECTED ",
                ui::bad().add_modifier(ui::Modifier::REVERSED),
            ),
            (Some(Link::Polling), _) => Span::styled(" ◐ polling ", ui::dim()),
            (Some(Link::Idle) | None, _) => Span::styled(" ○ connecting ", ui::dim()),
        };
        let used: usize = spans.iter().map(Span::width).sum();
        let pad = (width as usize).saturating_sub(used + state.width());
        spans.push(Span::raw(" ".repeat(pad)));
        spans.push(state);
        Line::from(spans)
    }

    fn note_line(&self) -> Line<'static> {
        if let Some(Link::Disconnected(why)) = &self.data.link {
            return Line::from(vec![
                Span::styled("disconnected: ", ui::bad()),
                Span::raw(format!("{why}; showing the last data")),
            ]);
        }
        match (&self.notice, self.data.ended.back()) {
            (Some(n), _) => Line::raw(n.clone()),
            (None, Some(e)) => Line::styled(
                format!(
                    "call #{} ended: {} (hung up by {})",
                    e.id, e.cause, e.hung_up_by
                ),
                ui::dim(),
            ),
            (None, None) => Line::raw(""),
        }
    }
}

fn draw_help(f: &mut Frame, area: Rect, scopes: &[Scope]) {
    let lines: Vec<Line<'static>> = keymap::help(scopes)
        .into_iter()
        .map(|(head, keys, text)| match head {
            Some(h) => Line::styled(h, ui::strong()),
            None => Line::from(vec![
                Span::styled(format!("  {keys:<14}"), ui::strong()),
                Span::raw(text),
            ]),
        })
        .collect();
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = ui::centered(area, 78, h);
    f.render_widget(ratatui::widgets::Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(
            ratatui::widgets::Block::default()
                .borders(ratatui::widgets::Borders::ALL)
                .title(" Keys (any key closes) "),
        ),
        r,
    );
}
