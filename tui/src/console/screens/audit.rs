//! The audit log, newest at the bottom; `f` follows new entries as they arrive.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};

use super::{ListNav, Screen, empty_line};
use crate::console::action::{Action, Request};
use crate::console::data::Data;
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
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            nav: ListNav::default(),
            follow: true,
        }
    }
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
            .filter(|e| self.nav.filter.matches(&row_text(e)))
            .collect()
    }
}

impl Screen for Audit {
    fn scopes(&self) -> Vec<Scope> {
        vec![Scope::Audit, Scope::List]
    }

    fn editing(&self) -> bool {
        self.nav.editing.is_some()
    }

    fn input(&mut self, key: KeyEvent, _data: &Data) -> Option<Action> {
        self.nav.input(key);
        None
    }

    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        let len = self.rows(data).len();
        if cmd == Command::Follow {
            self.follow = !self.follow;
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
        self.nav.clamp(rows.len());
        let [list, foot] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
        let title = if self.follow {
            " Audit · following "
        } else {
            " Audit "
        };
        let block = Block::default().borders(Borders::ALL).title(title);
        if rows.is_empty() {
            let what = if data.audit.value.is_empty() {
                "audit entries"
            } else {
                "entries match the filter"
            };
            f.render_widget(
                Paragraph::new(empty_line(
                    data.audit.loaded,
                    data.audit.error.as_deref(),
                    what,
                ))
                .block(block),
                list,
            );
        } else {
            let table_rows: Vec<Row> = rows
                .iter()
                .map(|e| {
                    let style = if e.result == "failure" {
                        ui::bad()
                    } else {
                        ratatui::style::Style::default()
                    };
                    Row::new(vec![
                        ui::date_time(e.ts_ms),
                        e.actor.clone().unwrap_or_else(|| "system".into()),
                        e.kind.clone(),
                        e.target.clone().unwrap_or_default(),
                        e.result.clone(),
                        e.reason.clone().unwrap_or_default(),
                    ])
                    .style(style)
                })
                .collect();
            let table = Table::new(
                table_rows,
                [
                    Constraint::Length(19),
                    Constraint::Length(10),
                    Constraint::Length(8),
                    Constraint::Min(12),
                    Constraint::Length(7),
                    Constraint::Min(0),
                ],
            )
            .header(
                Row::new(["Time (UTC)", "Who", "Kind", "Target", "Result", "Note"])
                    .style(ui::strong()),
            )
            .row_highlight_style(ui::selected())
            .highlight_symbol("▶")
            .block(block);
            self.nav.page = list.height.saturating_sub(3) as usize;
            let mut st = TableState::default().with_selected(Some(self.nav.selected));
            f.render_stateful_widget(table, list, &mut st);
        }
        f.render_widget(
            Paragraph::new(self.nav.footer(rows.len(), data.audit.value.len())),
            foot,
        );
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
}
