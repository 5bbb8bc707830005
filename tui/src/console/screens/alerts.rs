//! Open alerts; `a` acknowledges one on the daemon (`POST /api/alerts/{id}/ack`, audited):
//! every console then shows it dimmed with who acknowledged it, and it leaves the dashboard
//! until it clears and is raised again.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};

use super::{ListNav, Screen, empty_line};
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
        let rows = self.rows(data);
        self.nav.clamp(rows.len());
        let [list, foot] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
        let block = Block::default().borders(Borders::ALL).title(" Alerts ");
        if rows.is_empty() {
            f.render_widget(
                Paragraph::new(empty_line(
                    data.alerts.loaded,
                    data.alerts.error.as_deref(),
                    "open alerts",
                ))
                .block(block),
                list,
            );
        } else {
            let table_rows: Vec<Row> = rows
                .iter()
                .map(|a| {
                    let acked = a.acked_by.is_some();
                    let style = if acked {
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
            let table = Table::new(
                table_rows,
                [
                    Constraint::Length(9),
                    Constraint::Length(22),
                    Constraint::Length(18),
                    Constraint::Min(0),
                ],
            )
            .header(Row::new(["Severity", "Code", "Acked by", "Message"]).style(ui::strong()))
            .row_highlight_style(ui::selected())
            .highlight_symbol("▶")
            .block(block);
            self.nav.page = list.height.saturating_sub(3) as usize;
            let mut st = TableState::default().with_selected(Some(self.nav.selected));
            f.render_stateful_widget(table, list, &mut st);
        }
        f.render_widget(
            Paragraph::new(self.nav.footer(rows.len(), data.alerts.value.len())),
            foot,
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
