//! The audit log, newest at the bottom; `f` follows new entries as they arrive, and `F`
//! filters them by staff user, action and text (the `/` filter), also while following: the
//! entries the stream brings are filtered like the loaded ones.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::Row;

use super::form::{Form, FormKey};
use super::{ListNav, ListView, Screen, draw_list};
use crate::console::action::{Action, Request};
use crate::console::data::Data;
use crate::console::filter::Filter;
use crate::console::keymap::{Command, Scope};
use crate::console::model::AuditEntry;
use crate::console::ui;

/// The audit screen.
#[derive(Debug)]
pub struct Audit {
    /// Selection and filter.
    pub nav: ListNav,
    /// The selection stays on the newest entry.
    pub follow: bool,
    /// Only this staff user's entries (`system` for the daemon's own).
    pub user: Option<String>,
    /// Only entries of this action (`login`, `ban`, `update`, …).
    pub kind: Option<String>,
    /// The open filter form.
    pub form: Option<Form>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            nav: ListNav::default(),
            follow: true,
            user: None,
            kind: None,
            form: None,
        }
    }
}

/// The actions the daemon audits (its `AuditKind`), for the form's check and the CLI.
pub const KINDS: [&str; 14] = [
    "login", "logout", "create", "update", "delete", "password", "totp", "revoke", "init",
    "import", "deny", "ban", "backup", "restore",
];

fn actor(e: &AuditEntry) -> &str {
    e.actor.as_deref().unwrap_or("system")
}

fn row_text(e: &AuditEntry) -> String {
    format!(
        "{} {} {} {} {}",
        e.actor.as_deref().unwrap_or("system"),
        e.kind,
        e.target.as_deref().unwrap_or(""),
        e.result,
        e.reason.as_deref().unwrap_or("")
    )
}

impl Audit {
    /// The entries shown, oldest first.
    pub fn rows<'a>(&self, data: &'a Data) -> Vec<&'a AuditEntry> {
        data.audit
            .value
            .iter()
            .filter(|e| {
                self.user
                    .as_deref()
                    .is_none_or(|u| actor(e).eq_ignore_ascii_case(u))
                    && self
                        .kind
                        .as_deref()
                        .is_none_or(|k| e.kind.eq_ignore_ascii_case(k))
                    && self.nav.filter.matches(&row_text(e))
            })
            .collect()
    }

    fn filter_form(&self) -> Form {
        Form::new(
            "Audit filters",
            &[
                ("user", self.user.as_deref().unwrap_or("")),
                ("action", self.kind.as_deref().unwrap_or("")),
                ("text", self.nav.filter.text()),
            ],
        )
        .hint(&[
            "user: a staff username, or system; empty: everyone",
            "action: login logout create update delete password totp",
            "        revoke init import deny ban; text: a regex, ! inverts",
        ])
    }

    /// Applies the form, or says which field is wrong.
    fn apply_form(&mut self, form: &Form) -> Result<(), (usize, String)> {
        let kind = form.value(1).to_ascii_lowercase();
        if !kind.is_empty() && !KINDS.contains(&kind.as_str()) {
            return Err((1, format!("{kind:?} is not an audited action")));
        }
        let user = form.value(0);
        self.user = (!user.is_empty()).then(|| user.to_owned());
        self.kind = (!kind.is_empty()).then_some(kind);
        self.nav.filter = Filter::new(form.value(2));
        self.nav.selected = 0;
        Ok(())
    }

    /// The filters in force, for the title.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push(format!("user {u}"));
        }
        if let Some(k) = &self.kind {
            parts.push(format!("action {k}"));
        }
        parts.iter().map(|p| format!(" · {p}")).collect()
    }
}

impl Screen for Audit {
    fn scopes(&self) -> Vec<Scope> {
        vec![Scope::Audit, Scope::List]
    }

    fn editing(&self) -> bool {
        self.form.is_some() || self.nav.editing.is_some()
    }

    fn input(&mut self, key: KeyEvent, _data: &Data) -> Option<Action> {
        let Some(mut form) = self.form.take() else {
            self.nav.input(key);
            return None;
        };
        match form.input(key) {
            FormKey::Editing => self.form = Some(form),
            FormKey::Cancel => {}
            FormKey::Submit => {
                if let Err((i, why)) = self.apply_form(&form) {
                    form.refuse(i, why);
                    self.form = Some(form);
                }
            }
        }
        None
    }

    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        let len = self.rows(data).len();
        if cmd == Command::Follow {
            self.follow = !self.follow;
            return None;
        }
        if cmd == Command::Filters {
            self.form = Some(self.filter_form());
            return None;
        }
        if self.nav.navigate(cmd, len) {
            // Moving up leaves follow mode; going to the end takes it up again.
            self.follow = cmd == Command::Bottom || (self.follow && cmd == Command::Filter);
        }
        None
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, _now_ms: u64) {
        let rows = self.rows(data);
        if self.follow {
            self.nav.selected = rows.len().saturating_sub(1);
        }
        let table_rows: Vec<Row> = rows
            .iter()
            .map(|e| {
                let style = if e.result == "failure" {
                    ui::bad()
                } else {
                    ui::Style::default()
                };
                Row::new(vec![
                    ui::date_time(e.ts_ms),
                    actor(e).to_owned(),
                    e.kind.clone(),
                    e.target.clone().unwrap_or_default(),
                    e.result.clone(),
                    e.reason.clone().unwrap_or_default(),
                ])
                .style(style)
            })
            .collect();
        let title = format!(
            " Audit{}{} ",
            if self.follow { " · following" } else { "" },
            self.describe()
        );
        draw_list(
            f,
            area,
            &mut self.nav,
            ListView {
                title,
                header: vec!["Time (UTC)", "Who", "Kind", "Target", "Result", "Note"],
                widths: vec![
                    Constraint::Length(19),
                    Constraint::Length(10),
                    Constraint::Length(8),
                    Constraint::Min(12),
                    Constraint::Length(7),
                    Constraint::Min(0),
                ],
                rows: table_rows,
                total: data.audit.value.len(),
                loaded: data.audit.loaded,
                error: data.audit.error.as_deref(),
                what: "audit entries",
                select: true,
            },
        );
        if let Some(form) = &self.form {
            form.draw(f, area);
        }
    }

    fn refresh(&self, data: &Data) -> Vec<Request> {
        vec![Request::Audit {
            after: data.last_audit_id(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_until_moved_up() {
        let mut d = Data::default();
        d.audit.set(
            (1..=5)
                .map(|id| AuditEntry {
                    id,
                    ..AuditEntry::default()
                })
                .collect(),
        );
        let mut a = Audit::default();
        assert!(a.follow);
        a.command(Command::Up, &d);
        assert!(!a.follow);
        a.command(Command::Bottom, &d);
        assert!(a.follow);
        a.command(Command::Follow, &d);
        assert!(!a.follow);
        assert_eq!(a.refresh(&d), vec![Request::Audit { after: 5 }]);
    }

    #[test]
    fn filters_by_user_action_and_text_while_following() {
        use crate::console::model::StreamEvent;
        use crossterm::event::{KeyCode, KeyModifiers};
        let entry = |id, who: Option<&str>, kind: &str, target: &str| AuditEntry {
            id,
            actor: who.map(Into::into),
            kind: kind.into(),
            target: Some(target.into()),
            result: "success".into(),
            ..AuditEntry::default()
        };
        let mut d = Data::default();
        d.audit.set(vec![
            entry(1, Some("alice"), "ban", "ip:192.0.2.1"),
            entry(2, Some("bob"), "ban", "ip:192.0.2.2"),
            entry(3, Some("alice"), "login", "staff:alice"),
            entry(4, None, "ban", "ip:198.51.100.9"),
        ]);
        let mut a = Audit::default();
        a.command(Command::Filters, &d);
        assert!(a.editing());
        let key = |c| KeyEvent::new(c, KeyModifiers::NONE);
        for c in "ALICE\tban".chars() {
            let code = if c == '\t' {
                KeyCode::Tab
            } else {
                KeyCode::Char(c)
            };
            a.input(key(code), &d);
        }
        a.input(key(KeyCode::Tab), &d);
        a.input(key(KeyCode::Enter), &d);
        assert!(!a.editing());
        let ids = |a: &Audit, d: &Data| a.rows(d).iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&a, &d), [1]);
        assert_eq!(a.describe(), " · user ALICE · action ban");
        assert!(a.follow, "filtering keeps following");
        // A new entry from the stream is filtered like the others, and followed.
        d.apply(StreamEvent::Audit(entry(
            5,
            Some("alice"),
            "ban",
            "ip:203.0.113.5",
        )));
        d.apply(StreamEvent::Audit(entry(
            6,
            Some("bob"),
            "ban",
            "ip:203.0.113.6",
        )));
        assert_eq!(ids(&a, &d), [1, 5]);
        // The daemon's own entries are `system`; a text filter narrows further.
        a.user = Some("system".into());
        assert_eq!(ids(&a, &d), [4]);
        a.user = None;
        a.nav.filter = Filter::new("203\\.0");
        assert_eq!(ids(&a, &d), [5, 6]);
        // An action the daemon never audits is refused, naming the field.
        a.command(Command::Filters, &d);
        a.form.as_mut().unwrap().values[1] = "hack".into();
        a.form.as_mut().unwrap().focus = 2;
        a.input(key(KeyCode::Enter), &d);
        let f = a.form.as_ref().unwrap();
        assert_eq!(f.focus, 1);
        assert!(f.error.as_deref().unwrap().contains("hack"));
        a.input(key(KeyCode::Esc), &d);
        assert!(!a.editing());
        assert_eq!(
            a.kind.as_deref(),
            Some("ban"),
            "a cancelled form changes nothing"
        );
    }
}
