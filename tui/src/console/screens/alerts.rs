//! Open alerts; `a` acknowledges one on the daemon (`POST /api/alerts/{id}/ack`, audited):
//! every console then shows it dimmed with who acknowledged it, and it leaves the dashboard
//! until it clears and is raised again.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::Row;

use super::{ListNav, ListView, Screen, draw_list};
use crate::console::action::{Action, Request};
use crate::console::data::Data;
use crate::console::keymap::{Command, Scope};
use crate::console::model::Alert;
use crate::console::ui;

/// The alerts screen.
#[derive(Debug, Default)]
pub struct Alerts {
    /// Selection and filter.
    pub nav: ListNav,
}

impl Alerts {
    /// The alerts shown: critical first.
    pub fn rows<'a>(&self, data: &'a Data) -> Vec<&'a Alert> {
        let rank = |s: &str| match s {
            "critical" => 0,
            "warning" => 1,
            _ => 2,
        };
        let mut v: Vec<&Alert> = data
            .alerts
            .value
            .iter()
            .filter(|a| {
                self.nav
                    .filter
                    .matches(&format!("{} {} {}", a.severity, a.code, a.message))
            })
            .collect();
        v.sort_by(|a, b| {
            rank(&a.severity)
                .cmp(&rank(&b.severity))
                .then(a.code.cmp(&b.code))
        });
        v
    }
}

impl Screen for Alerts {
    fn scopes(&self) -> Vec<Scope> {
        vec![Scope::Alerts, Scope::List]
    }

    fn editing(&self) -> bool {
        self.nav.editing.is_some()
    }

    fn input(&mut self, key: KeyEvent, _data: &Data) -> Option<Action> {
        self.nav.input(key);
        None
    }

    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        let rows = self.rows(data);
        if self.nav.navigate(cmd, rows.len()) {
            return None;
        }
        match cmd {
            Command::Ack => rows
                .get(self.nav.selected)
                .map(|a| Action::Ack(a.key().to_owned())),
            _ => None,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, _now_ms: u64) {
        let rows: Vec<Row> = self
            .rows(data)
            .iter()
            .map(|a| {
                let style = if a.acked_by.is_some() {
                    ui::dim()
                } else if a.severity == "critical" {
                    ui::bad()
                } else {
                    ui::warn()
                };
                Row::new(vec![
                    a.severity.to_uppercase(),
                    a.code.clone(),
                    match (&a.acked_by, a.acked_ms) {
                        (Some(who), Some(at)) => format!("{who} {}", ui::clock(at)),
                        (Some(who), None) => who.clone(),
                        _ => String::new(),
                    },
                    a.message.clone(),
                ])
                .style(style)
            })
            .collect();
        draw_list(
            f,
            area,
            &mut self.nav,
            ListView {
                title: " Alerts ".into(),
                header: vec!["Severity", "Code", "Acked by", "Message"],
                widths: vec![
                    Constraint::Length(9),
                    Constraint::Length(22),
                    Constraint::Length(18),
                    Constraint::Min(0),
                ],
                rows,
                total: data.alerts.value.len(),
                loaded: data.alerts.loaded,
                error: data.alerts.error.as_deref(),
                what: "open alerts",
                select: true,
            },
        );
    }

    fn refresh(&self, _data: &Data) -> Vec<Request> {
        vec![Request::Alerts]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_first_and_ack_names_the_code() {
        let mut d = Data::default();
        let a = |code: &str, severity: &str| Alert {
            id: String::new(),
            code: code.into(),
            severity: severity.into(),
            message: String::new(),
            ..Alert::default()
        };
        d.alerts.set(vec![a("w", "warning"), a("c", "critical")]);
        let mut s = Alerts::default();
        assert_eq!(s.command(Command::Ack, &d), Some(Action::Ack("c".into())));
        s.command(Command::Down, &d);
        assert_eq!(s.command(Command::Ack, &d), Some(Action::Ack("w".into())));
    }
}
