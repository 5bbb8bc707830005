//! Accounts and upstream connections against their limits: concurrent calls and new calls in
//! the last second (counted from the live calls) against `max_sessions`/`max_channels` and
//! `cps_limit`, and each account's balance.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::Row;

use super::{ListNav, ListView, Screen, draw_list};
use crate::console::action::{Action, Request};
use crate::console::data::Data;
use crate::console::keymap::{Command, Scope};
use crate::console::ui;

/// The accounts screen (accounts above, connections below; the filter applies to both).
#[derive(Debug, Default)]
pub struct Accounts {
    /// Selection (in the accounts) and filter.
    pub nav: ListNav,
    conns: ListNav,
}

/// `used/limit`, bold when at or over the limit.
fn against(used: usize, limit: Option<u32>) -> (String, bool) {
    match limit {
        Some(l) => (format!("{used}/{l}"), used as u64 >= u64::from(l)),
        None => (format!("{used}/-"), false),
    }
}

impl Screen for Accounts {
    fn scopes(&self) -> Vec<Scope> {
        vec![Scope::List]
    }

    fn editing(&self) -> bool {
        self.nav.editing.is_some()
    }

    fn input(&mut self, key: KeyEvent, _data: &Data) -> Option<Action> {
        self.nav.input(key);
        self.conns.filter = self.nav.filter.clone();
        None
    }

    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        self.nav.navigate(cmd, data.accounts.value.0.len());
        None
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, now_ms: u64) {
        let (accounts, conns) = &data.accounts.value;
        let calls = &data.calls.value;
        let recent = |c: &&crate::console::model::Call| now_ms.saturating_sub(c.started_ms) < 1000;
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(60), Constraint::Min(0)]).areas(area);
        let style = |hot: bool| if hot { ui::bad() } else { ui::Style::default() };
        let rows: Vec<Row> = accounts
            .iter()
            .filter(|a| {
                self.nav.filter.matches(&format!(
                    "{} {} {}",
                    a.id,
                    a.name,
                    a.tariff.as_deref().unwrap_or("")
                ))
            })
            .map(|a| {
                let mine = calls.iter().filter(|c| c.account_id == a.id);
                let (sessions, s_hot) = against(mine.clone().count(), a.max_sessions);
                let (cps, c_hot) = against(mine.filter(recent).count(), a.cps_limit);
                Row::new(vec![
                    a.id.to_string(),
                    a.name.clone(),
                    if a.enabled { "yes".into() } else { "no".into() },
                    sessions,
                    cps,
                    a.balance.clone(),
                    a.tariff.clone().unwrap_or_default(),
                ])
                .style(style(s_hot || c_hot))
            })
            .collect();
        draw_list(
            f,
            top,
            &mut self.nav,
            ListView {
                title: " Accounts · calls and CPS in use / limit ".into(),
                header: vec!["#", "Account", "On", "Calls", "CPS", "Balance", "Tariff"],
                widths: vec![
                    Constraint::Length(5),
                    Constraint::Min(12),
                    Constraint::Length(3),
                    Constraint::Length(10),
                    Constraint::Length(8),
                    Constraint::Length(12),
                    Constraint::Min(0),
                ],
                rows,
                total: accounts.len(),
                loaded: data.accounts.loaded,
                error: data.accounts.error.as_deref(),
                what: "accounts",
                select: true,
            },
        );
        let rows: Vec<Row> = conns
            .iter()
            .filter(|c| {
                self.nav
                    .filter
                    .matches(&format!("{} {} {}", c.id, c.name, c.destination))
            })
            .map(|c| {
                let mine = calls.iter().filter(|k| k.connection_id == Some(c.id));
                let (chans, s_hot) = against(mine.clone().count(), c.max_channels);
                let (cps, c_hot) = against(mine.filter(recent).count(), c.cps_limit);
                Row::new(vec![
                    c.id.to_string(),
                    c.name.clone(),
                    if c.enabled { "yes".into() } else { "no".into() },
                    chans,
                    cps,
                    c.destination.clone(),
                ])
                .style(style(s_hot || c_hot))
            })
            .collect();
        draw_list(
            f,
            bottom,
            &mut self.conns,
            ListView {
                title: " Upstream connections · channels and CPS in use / limit ".into(),
                header: vec!["#", "Connection", "On", "Channels", "CPS", "Destination"],
                widths: vec![
                    Constraint::Length(5),
                    Constraint::Min(12),
                    Constraint::Length(3),
                    Constraint::Length(10),
                    Constraint::Length(8),
                    Constraint::Min(0),
                ],
                rows,
                total: conns.len(),
                loaded: data.accounts.loaded,
                error: data.accounts.error.as_deref(),
                what: "connections",
                select: false,
            },
        );
    }

    fn refresh(&self, _data: &Data) -> Vec<Request> {
        vec![Request::Accounts, Request::Calls]
    }
}
