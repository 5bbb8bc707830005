//! One component per screen. A screen keeps only its view state (selection, filter, sort);
//! what it shows comes from [`Data`], so it draws the same from a fake source as from the
//! daemon.

pub mod accounts;
pub mod alerts;
pub mod audit;
pub mod bans;
pub mod calls;
pub mod cdrs;
pub mod dashboard;
pub mod firewall;
pub mod form;
pub mod ladder;
pub mod login;
pub mod staff;

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};

use super::action::{Action, Request};
use super::data::Data;
use super::filter::Filter;
use super::keymap::{Command, Scope};
use super::ui;

/// What every screen does.
pub trait Screen {
    /// Its key scopes, most specific first (the app adds [`Scope::Global`]).
    fn scopes(&self) -> Vec<Scope>;
    /// Whether a text field has the keys (then they go to [`Screen::input`]).
    fn editing(&self) -> bool {
        false
    }
    /// A key while [`Screen::editing`].
    fn input(&mut self, _key: KeyEvent, _data: &Data) -> Option<Action> {
        None
    }
    /// A command from the key map.
    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action>;
    /// Draws into `area`.
    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, now_ms: u64);
    /// What to ask the daemon when the screen is shown or refreshed.
    fn refresh(&self, data: &Data) -> Vec<Request>;
}

/// Selection in a list plus its `/` filter; shared by the list screens.
#[derive(Debug, Default)]
pub struct ListNav {
    /// Index of the selected row among the shown rows.
    pub selected: usize,
    /// Rows shown in the last draw, for page moves.
    pub page: usize,
    /// The filter in force.
    pub filter: Filter,
    /// The filter being typed, while editing.
    pub editing: Option<String>,
}

impl ListNav {
    /// Moves the selection for a navigation command; `false` if `cmd` is not one.
    pub fn navigate(&mut self, cmd: Command, len: usize) -> bool {
        let last = len.saturating_sub(1);
        let page = self.page.max(1);
        self.selected = match cmd {
            Command::Up => self.selected.saturating_sub(1),
            Command::Down => (self.selected + 1).min(last),
            Command::PageUp => self.selected.saturating_sub(page),
            Command::PageDown => (self.selected + page).min(last),
            Command::Top => 0,
            Command::Bottom => last,
            Command::Filter => {
                self.editing = Some(self.filter.text().to_owned());
                return true;
            }
            _ => return false,
        };
        true
    }

    /// Keeps the selection inside a list of `len` rows.
    pub fn clamp(&mut self, len: usize) {
        self.selected = self.selected.min(len.saturating_sub(1));
    }

    /// A key while typing the filter: Enter keeps it, Esc drops it; the filter applies
    /// as it is typed.
    pub fn input(&mut self, key: KeyEvent) {
        let Some(buf) = self.editing.as_mut() else {
            return;
        };
        match key.code {
            KeyCode::Enter => self.editing = None,
            KeyCode::Esc => {
                self.editing = None;
                self.filter = Filter::new("");
            }
            KeyCode::Backspace => {
                buf.pop();
                self.filter = Filter::new(buf);
            }
            KeyCode::Char(c) if !c.is_control() && buf.len() < 200 => {
                buf.push(c);
                self.filter = Filter::new(buf);
            }
            _ => {}
        }
        self.selected = 0;
    }

    /// The line under a list: the filter being typed or in force, and the row count.
    pub fn footer(&self, shown: usize, total: usize) -> Line<'static> {
        let mut spans = Vec::new();
        if let Some(buf) = &self.editing {
            spans.push(Span::styled("filter: ", ui::strong()));
            spans.push(Span::styled(format!("{buf} "), ui::selected()));
            spans.push(Span::raw("  (regex, ! inverts; Enter keeps, Esc clears)"));
        } else if !self.filter.is_empty() {
            spans.push(Span::styled("filter: ", ui::strong()));
            spans.push(Span::raw(format!("{}  ", self.filter.text())));
            spans.push(Span::raw(format!("{shown} of {total}")));
        } else {
            spans.push(Span::raw(format!("{total} rows")));
        }
        Line::from(spans)
    }
}

/// The line a screen shows instead of its rows: still loading, empty, or the error.
pub fn empty_line(loaded: bool, error: Option<&str>, what: &str) -> Line<'static> {
    match error {
        Some(e) => Line::from(vec![
            Span::styled("error: ", ui::bad()),
            Span::raw(e.to_owned()),
        ]),
        None if !loaded => Line::from(Span::styled("loading…", ui::dim())),
        None => Line::from(Span::styled(format!("no {what}"), ui::dim())),
    }
}

/// A list screen's table: what [`draw_list`] draws.
pub struct ListView<'a> {
    /// The frame's title.
    pub title: String,
    /// Column headings.
    pub header: Vec<&'static str>,
    /// Column widths.
    pub widths: Vec<ratatui::layout::Constraint>,
    /// The rows shown (already filtered).
    pub rows: Vec<ratatui::widgets::Row<'a>>,
    /// Rows before the filter.
    pub total: usize,
    /// Any reply has arrived.
    pub loaded: bool,
    /// The last failure.
    pub error: Option<&'a str>,
    /// What the rows are, for "no …".
    pub what: &'static str,
    /// The selection is shown (a second table on a screen leaves it off).
    pub select: bool,
}

/// Draws a list screen: the table (or why there is none) and the filter line under it.
pub fn draw_list(f: &mut Frame, area: Rect, nav: &mut ListNav, v: ListView<'_>) {
    use ratatui::layout::{Constraint, Layout};
    use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};
    let shown = v.rows.len();
    nav.clamp(shown);
    let [list, foot] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
    let block = Block::default().borders(Borders::ALL).title(v.title);
    if shown == 0 {
        let line = match (v.error, v.total) {
            (None, t) if t > 0 => Line::styled("no rows match the filter", ui::dim()),
            (e, _) => empty_line(v.loaded, e, v.what),
        };
        f.render_widget(Paragraph::new(line).block(block), list);
    } else {
        let table = Table::new(v.rows, v.widths)
            .header(Row::new(v.header).style(ui::strong()))
            .row_highlight_style(ui::selected())
            .highlight_symbol("▶")
            .block(block);
        nav.page = list.height.saturating_sub(3) as usize;
        let mut st = TableState::default().with_selected(v.select.then_some(nav.selected));
        f.render_stateful_widget(table, list, &mut st);
    }
    f.render_widget(Paragraph::new(nav.footer(shown, v.total)), foot);
}
