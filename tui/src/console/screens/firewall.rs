//! The firewall: every service's allow list and the deny list, with permissive entries
//! (`0.0.0.0/0`, `::/0`, or no allow list at all) marked. Admins add (`a` allow, `d` deny) in
//! a form that checks the prefix, and remove (`x`); each change is shown as a diff first.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row};

use super::{ListNav, ListView, Screen, draw_list};
use crate::console::action::{Action, Request};
use crate::console::data::Data;
use crate::console::keymap::{Command, Scope};
use crate::console::model::FirewallView;
use crate::console::ui;

/// One row of the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwRow {
    /// `allow` or `deny`.
    pub list: &'static str,
    /// The service (`*` for the deny list).
    pub service: String,
    /// `udp/5060`.
    pub port: String,
    /// The prefix; `any` for an unrestricted service.
    pub cidr: String,
    /// `api`, `config`, or empty.
    pub origin: String,
    /// The deny entry's id.
    pub deny_id: Option<u64>,
    /// Anyone reaches the service through it.
    pub permissive: bool,
}

/// The rows of a firewall view: allow lists by service, then the deny list.
pub fn rows(v: &FirewallView) -> Vec<FwRow> {
    let mut out = Vec::new();
    for s in &v.services {
        let port = format!("{}/{}", s.proto, s.port);
        if s.allow.is_empty() || !s.restricted {
            out.push(FwRow {
                list: "allow",
                service: s.service.clone(),
                port: port.clone(),
                cidr: "any".into(),
                origin: String::new(),
                deny_id: None,
                permissive: true,
            });
        }
        for a in &s.allow {
            let origin = v
                .allow_entries
                .iter()
                .find(|e| e.service == s.service && e.cidr == *a)
                .map_or_else(String::new, |e| e.origin.clone());
            out.push(FwRow {
                list: "allow",
                service: s.service.clone(),
                port: port.clone(),
                cidr: a.clone(),
                origin,
                deny_id: None,
                permissive: a.ends_with("/0"),
            });
        }
    }
    for d in &v.deny {
        out.push(FwRow {
            list: "deny",
            service: "*".into(),
            port: String::new(),
            cidr: d.cidr.clone(),
            origin: d.origin.clone(),
            deny_id: d.id,
            permissive: false,
        });
    }
    out
}

/// The add form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FwForm {
    /// An allow entry (else a deny entry).
    pub allow: bool,
    /// The service, for an allow entry.
    pub service: String,
    /// The prefix.
    pub cidr: String,
    focus: usize,
    /// Why it was refused.
    pub error: Option<String>,
}

impl FwForm {
    fn fields(&self) -> usize {
        if self.allow { 2 } else { 1 }
    }

    fn input(&mut self, key: KeyEvent, services: &[String]) -> Option<Result<Action, ()>> {
        let n = self.fields();
        match key.code {
            KeyCode::Esc => return Some(Err(())),
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % n,
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + n - 1) % n,
            KeyCode::Backspace => {
                self.value().pop();
            }
            KeyCode::Enter if self.focus + 1 < n => self.focus += 1,
            KeyCode::Enter => match self.validate(services) {
                Ok(a) => return Some(Ok(a)),
                Err(e) => self.error = Some(e),
            },
            KeyCode::Char(c) if !c.is_control() => {
                let v = self.value();
                if v.len() < 64 {
                    v.push(c);
                }
            }
            _ => {}
        }
        None
    }

    fn value(&mut self) -> &mut String {
        if self.allow && self.focus == 0 {
            &mut self.service
        } else {
            &mut self.cidr
        }
    }

    fn validate(&mut self, services: &[String]) -> Result<Action, String> {
        let service = self.service.trim().to_ascii_lowercase();
        if self.allow && !services.contains(&service) {
            self.focus = 0;
            return Err(format!("service: one of {}", services.join(", ")));
        }
        let cidr = super::bans::check_prefix(&self.cidr).inspect_err(|_| {
            self.focus = self.fields() - 1;
        })?;
        if self.allow {
            let mut prompt = format!("Apply this change?\n+ allow {service} {cidr}");
            if cidr.ends_with("/0") {
                prompt.push_str("\n! this opens the service to every address");
            }
            Ok(Action::Confirm {
                prompt,
                request: Request::AllowAdd { service, cidr },
            })
        } else {
            if cidr.ends_with("/0") {
                return Err(format!("denying {cidr} would drop everything"));
            }
            Ok(Action::Confirm {
                prompt: format!("Apply this change?\n+ deny {cidr}"),
                request: Request::DenyAdd(cidr),
            })
        }
    }

    fn draw(&self, f: &mut Frame, area: Rect) {
        let mut lines = Vec::new();
        if self.allow {
            lines.push(ui::field("service", &self.service, false, self.focus == 0));
        }
        lines.push(ui::field(
            "prefix",
            &self.cidr,
            false,
            self.focus + 1 == self.fields(),
        ));
        lines.push(Line::styled(
            "an address or CIDR; Enter checks it and shows the change",
            ui::dim(),
        ));
        if let Some(e) = &self.error {
            lines.push(Line::from(vec![
                Span::styled("error: ", ui::bad()),
                Span::raw(e.clone()),
            ]));
        }
        let title = if self.allow { " Allow " } else { " Deny " };
        let r = ui::centered(area, 64, lines.len() as u16 + 2);
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
            r,
        );
    }
}

/// The firewall screen.
#[derive(Debug, Default)]
pub struct Firewall {
    /// Selection and filter.
    pub nav: ListNav,
    /// The open form.
    pub form: Option<FwForm>,
}

impl Firewall {
    fn shown(&self, data: &Data) -> Vec<FwRow> {
        data.firewall
            .value
            .as_ref()
            .map(rows)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                self.nav
                    .filter
                    .matches(&format!("{} {} {} {}", r.list, r.service, r.cidr, r.origin))
            })
            .collect()
    }

    fn services(data: &Data) -> Vec<String> {
        data.firewall
            .value
            .as_ref()
            .map(|v| v.services.iter().map(|s| s.service.clone()).collect())
            .unwrap_or_default()
    }
}

impl Screen for Firewall {
    fn scopes(&self) -> Vec<Scope> {
        vec![Scope::Firewall, Scope::List]
    }

    fn editing(&self) -> bool {
        self.form.is_some() || self.nav.editing.is_some()
    }

    fn input(&mut self, key: KeyEvent, data: &Data) -> Option<Action> {
        if let Some(form) = self.form.as_mut() {
            let r = form.input(key, &Self::services(data))?;
            self.form = None;
            return r.ok();
        }
        self.nav.input(key);
        None
    }

    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        let rows = self.shown(data);
        if self.nav.navigate(cmd, rows.len()) {
            return None;
        }
        match cmd {
            Command::Allow | Command::Deny => {
                let allow = cmd == Command::Allow;
                let service = match rows.get(self.nav.selected) {
                    Some(r) if allow && r.list == "allow" => r.service.clone(),
                    _ => String::new(),
                };
                self.form = Some(FwForm {
                    allow,
                    focus: usize::from(allow && !service.is_empty()),
                    service,
                    ..FwForm::default()
                });
                None
            }
            Command::Remove => {
                let r = rows.get(self.nav.selected)?;
                if r.origin == "config" || r.cidr == "any" {
                    return Some(Action::Notice(format!(
                        "{} {} {} comes from sbc.toml: change it there",
                        r.list, r.service, r.cidr
                    )));
                }
                let request = match (r.list, r.deny_id) {
                    ("deny", Some(id)) => Request::DenyRemove(id),
                    ("deny", None) => return None,
                    _ => Request::AllowRemove {
                        service: r.service.clone(),
                        cidr: r.cidr.clone(),
                    },
                };
                let mut prompt =
                    format!("Apply this change?\n- {} {} {}", r.list, r.service, r.cidr);
                let last_allow = r.list == "allow"
                    && rows
                        .iter()
                        .filter(|o| o.list == "allow" && o.service == r.service)
                        .count()
                        == 1;
                if last_allow {
                    prompt.push_str(&format!("\n! {} is then open to every address", r.service));
                }
                Some(Action::Confirm { prompt, request })
            }
            _ => None,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, _now_ms: u64) {
        let shown = self.shown(data);
        let total = data.firewall.value.as_ref().map_or(0, |v| rows(v).len());
        let permissive = shown.iter().filter(|r| r.permissive).count();
        let title = if permissive > 0 {
            format!(" Firewall · {permissive} permissive ")
        } else {
            " Firewall ".to_owned()
        };
        let table_rows = shown
            .iter()
            .map(|r| {
                let style = if r.permissive {
                    ui::bad()
                } else {
                    ui::Style::default()
                };
                Row::new(vec![
                    r.list.to_owned(),
                    r.service.clone(),
                    r.port.clone(),
                    r.cidr.clone(),
                    r.origin.clone(),
                    if r.permissive {
                        "PERMISSIVE".into()
                    } else {
                        String::new()
                    },
                ])
                .style(style)
            })
            .collect();
        draw_list(
            f,
            area,
            &mut self.nav,
            ListView {
                title,
                header: vec!["List", "Service", "Port", "Prefix", "From", ""],
                widths: vec![
                    Constraint::Length(6),
                    Constraint::Length(12),
                    Constraint::Length(10),
                    Constraint::Length(26),
                    Constraint::Length(7),
                    Constraint::Min(0),
                ],
                rows: table_rows,
                total,
                loaded: data.firewall.loaded,
                error: data.firewall.error.as_deref(),
                what: "firewall entries",
                select: true,
            },
        );
        if let Some(form) = &self.form {
            form.draw(f, area);
        }
    }

    fn refresh(&self, _data: &Data) -> Vec<Request> {
        vec![Request::Firewall]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::model::{AllowEntry, DenyEntry, ServiceView};
    use crossterm::event::KeyModifiers;

    fn data() -> Data {
        let mut d = Data::default();
        d.firewall.set(Some(FirewallView {
            services: vec![
                ServiceView {
                    service: "sip".into(),
                    port: 5060,
                    proto: "udp".into(),
                    restricted: false,
                    allow: vec![],
                },
                ServiceView {
                    service: "ssh".into(),
                    port: 22,
                    proto: "tcp".into(),
                    restricted: true,
                    allow: vec!["10.0.0.0/8".into()],
                },
            ],
            deny: vec![DenyEntry {
                cidr: "203.0.113.0/24".into(),
                id: Some(4),
                origin: "api".into(),
            }],
            allow_entries: vec![AllowEntry {
                service: "ssh".into(),
                cidr: "10.0.0.0/8".into(),
                origin: "api".into(),
            }],
        }));
        d
    }

    fn k(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn rows_mark_permissive_and_removal_shows_the_diff() {
        let d = data();
        let r = rows(d.firewall.value.as_ref().unwrap());
        assert_eq!(r.len(), 3);
        assert!(r[0].permissive && r[0].cidr == "any");
        let mut s = Firewall::default();
        assert!(
            matches!(s.command(Command::Remove, &d), Some(Action::Notice(_))),
            "sbc.toml's"
        );
        s.command(Command::Down, &d);
        let Some(Action::Confirm { prompt, request }) = s.command(Command::Remove, &d) else {
            panic!()
        };
        assert_eq!(
            request,
            Request::AllowRemove {
                service: "ssh".into(),
                cidr: "10.0.0.0/8".into()
            }
        );
        assert!(
            prompt.contains("- allow ssh 10.0.0.0/8") && prompt.contains("open to every address"),
            "{prompt}"
        );
        s.command(Command::Bottom, &d);
        assert!(matches!(
            s.command(Command::Remove, &d),
            Some(Action::Confirm {
                request: Request::DenyRemove(4),
                ..
            })
        ));
    }

    #[test]
    fn add_form_checks_service_and_prefix() {
        let d = data();
        let mut s = Firewall::default();
        s.command(Command::Allow, &d);
        assert_eq!(
            s.form.as_ref().unwrap().service,
            "sip",
            "the selected row's service"
        );
        s.input(k(KeyCode::BackTab), &d);
        for _ in 0..3 {
            s.input(k(KeyCode::Backspace), &d);
        }
        for c in "smtp".chars() {
            s.input(k(KeyCode::Char(c)), &d);
        }
        s.input(k(KeyCode::Enter), &d);
        for c in "192.0.2.0/24".chars() {
            s.input(k(KeyCode::Char(c)), &d);
        }
        assert_eq!(s.input(k(KeyCode::Enter), &d), None);
        assert!(
            s.form
                .as_ref()
                .unwrap()
                .error
                .as_ref()
                .unwrap()
                .contains("sip, ssh")
        );
        for _ in 0..4 {
            s.input(k(KeyCode::Backspace), &d);
        }
        for c in "ssh".chars() {
            s.input(k(KeyCode::Char(c)), &d);
        }
        s.input(k(KeyCode::Tab), &d);
        let a = s.input(k(KeyCode::Enter), &d);
        assert!(
            matches!(a, Some(Action::Confirm { request: Request::AllowAdd { ref service, ref cidr }, ref prompt })
            if service == "ssh" && cidr == "192.0.2.0/24" && prompt.contains("+ allow ssh 192.0.2.0/24")),
            "{a:?}"
        );
        s.command(Command::Deny, &d);
        for c in "0.0.0.0/0".chars() {
            s.input(k(KeyCode::Char(c)), &d);
        }
        assert_eq!(s.input(k(KeyCode::Enter), &d), None);
        assert!(
            s.form
                .as_ref()
                .unwrap()
                .error
                .as_ref()
                .unwrap()
                .contains("drop everything")
        );
    }
}
