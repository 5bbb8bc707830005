//! One component per screen. A screen keeps only its view state (selection, filter, sort);
//! what it shows comes from [`Data`], so it draws the same from a fake source as from the
//! daemon.

pub mod alerts;
pub mod audit;
pub mod bans;
pub mod calls;
pub mod dashboard;
pub mod ladder;
pub mod login;

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
