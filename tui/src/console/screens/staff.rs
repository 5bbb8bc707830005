//! Staff (admins only): role, TOTP state, where from they may log in.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::Row;

use super::{ListNav, ListView, Screen, draw_list};
use crate::console::action::{Action, Request};
use crate::console::data::Data;
use crate::console::keymap::{Command, Scope};
use crate::console::ui;

/// The staff screen.
#[derive(Debug, Default)]
pub struct Staff {
    /// Selection and filter.
    pub nav: ListNav,
}

impl Screen for Staff {
    fn scopes(&self) -> Vec<Scope> {
        vec![Scope::List]
    }

    fn editing(&self) -> bool {
        self.nav.editing.is_some()
    }

    fn input(&mut self, key: KeyEvent, _data: &Data) -> Option<Action> {
        self.nav.input(key);
        None
    }

    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        self.nav.navigate(cmd, data.staff.value.len());
        None
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, _now_ms: u64) {
        let rows: Vec<Row> = data
            .staff
            .value
            .iter()
            .filter(|s| {
                self.nav
                    .filter
                    .matches(&format!("{} {} {}", s.username, s.role, s.totp))
            })
            .map(|s| {
                let weak = s.totp != "enrolled" || s.must_change_password;
                let style = if !s.enabled {
                    ui::dim()
                } else if weak {
                    ui::warn()
                } else {
                    ui::Style::default()
                };
                let hosts = if s.allowed_hosts.is_empty() {
                    "anywhere".to_owned()
                } else {
                    s.allowed_hosts.join(" ")
                };
                Row::new(vec![
                    s.id.to_string(),
                    s.username.clone(),
                    s.role.clone(),
                    if s.enabled { "yes".into() } else { "no".into() },
                    s.totp.clone(),
                    if s.must_change_password {
                        "must change".into()
                    } else {
                        String::new()
                    },
                    hosts,
                ])
                .style(style)
            })
            .collect();
        draw_list(
            f,
            area,
            &mut self.nav,
            ListView {
                title: " Staff ".into(),
                header: vec!["#", "User", "Role", "On", "TOTP", "Password", "From"],
                widths: vec![
                    Constraint::Length(4),
                    Constraint::Length(14),
                    Constraint::Length(10),
                    Constraint::Length(3),
                    Constraint::Length(9),
                    Constraint::Length(12),
                    Constraint::Min(0),
                ],
                rows,
                total: data.staff.value.len(),
                loaded: data.staff.loaded,
                error: data.staff.error.as_deref(),
                what: "staff",
                select: true,
            },
        );
    }

    fn refresh(&self, _data: &Data) -> Vec<Request> {
        vec![Request::Staff]
    }
}
