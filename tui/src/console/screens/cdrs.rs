//! The last hour's call records, newest first, with the `/` filter (e.g. `^4420`, `!200`).

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::Row;

use super::{ListNav, ListView, Screen, draw_list};
use crate::console::action::{Action, Request};
use crate::console::data::Data;
use crate::console::keymap::{Command, Scope};
use crate::console::model::Cdr;
use crate::console::ui;

/// How many records the screen asks for at most.
pub const CDR_LIMIT: usize = 10_000;
/// The window it asks for: the last hour.
pub const CDR_WINDOW_SECS: u64 = 3600;

/// The CDR screen.
#[derive(Debug, Default)]
pub struct Cdrs {
    /// Selection and filter.
    pub nav: ListNav,
}

fn row_text(c: &Cdr) -> String {
    format!(
        "{} {} {} {} {} {}",
        c.caller,
        c.callee,
        c.result_code,
        c.reason,
        c.source.as_deref().unwrap_or(""),
        c.call_id
    )
}

impl Cdrs {
    fn shown<'a>(&self, data: &'a Data) -> Vec<&'a Cdr> {
        let mut v: Vec<&Cdr> = data
            .cdrs
            .value
            .iter()
            .filter(|c| self.nav.filter.matches(&row_text(c)))
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.id));
        v
    }
}

impl Screen for Cdrs {
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
        self.nav.navigate(cmd, self.shown(data).len());
        None
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, _now_ms: u64) {
        let rows: Vec<Row> = self
            .shown(data)
            .into_iter()
            .map(|c| {
                let style = if c.answer_ms.is_none() {
                    ui::dim()
                } else {
                    ui::Style::default()
                };
                Row::new(vec![
                    ui::date_time(c.start_ms),
                    c.caller.clone(),
                    c.callee.clone(),
                    c.account_id.map_or("-".into(), |a| a.to_string()),
                    c.result_code.to_string(),
                    ui::duration(c.duration_secs),
                    c.cost.clone(),
                    c.reason.clone(),
                ])
                .style(style)
            })
            .collect();
        draw_list(
            f,
            area,
            &mut self.nav,
            ListView {
                title: " Call records · last hour, newest first ".into(),
                header: vec![
                    "Start (UTC)",
                    "From",
                    "To",
                    "Acct",
                    "Code",
                    "Dur",
                    "Cost",
                    "Reason",
                ],
                widths: vec![
                    Constraint::Length(19),
                    Constraint::Length(14),
                    Constraint::Length(14),
                    Constraint::Length(4),
                    Constraint::Length(4),
                    Constraint::Length(6),
                    Constraint::Length(7),
                    Constraint::Min(0),
                ],
                rows,
                total: data.cdrs.value.len(),
                loaded: data.cdrs.loaded,
                error: data.cdrs.error.as_deref(),
                what: "call records",
                select: true,
            },
        );
    }

    fn refresh(&self, _data: &Data) -> Vec<Request> {
        vec![Request::Cdrs]
    }
}
