//! A small pop-up form of text fields (the CDR and audit filters, a new staff user, a role):
//! Tab and the arrows move between fields, Enter on the last field submits, Esc cancels.
//! The screen that opens it checks what was typed and either acts or puts the error back.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use crate::console::ui;

/// Longest value a field takes.
const MAX_LEN: usize = 200;

/// What a key did to the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormKey {
    /// Still editing.
    Editing,
    /// Enter on the last field: the screen checks the values.
    Submit,
    /// Esc.
    Cancel,
}

/// A titled list of labelled text fields with a hint and an error line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// The pop-up's title.
    pub title: &'static str,
    /// Labels, one per field.
    pub labels: Vec<&'static str>,
    /// Values, one per field.
    pub values: Vec<String>,
    /// Fields shown as dots (passwords).
    pub masked: Vec<bool>,
    /// Lines of help under the fields.
    pub hints: Vec<&'static str>,
    /// The field with the cursor.
    pub focus: usize,
    /// Why the last submit was refused.
    pub error: Option<String>,
}

impl Form {
    /// A form with these `(label, initial value)` fields.
    pub fn new(title: &'static str, fields: &[(&'static str, &str)]) -> Form {
        Form {
            title,
            labels: fields.iter().map(|(l, _)| *l).collect(),
            values: fields.iter().map(|(_, v)| (*v).to_owned()).collect(),
            masked: vec![false; fields.len()],
            hints: Vec::new(),
            focus: 0,
            error: None,
        }
    }

    /// With help lines under the fields.
    pub fn hint(mut self, lines: &[&'static str]) -> Form {
        self.hints = lines.to_vec();
        self
    }

    /// With field `i` shown as dots.
    pub fn mask(mut self, i: usize) -> Form {
        self.masked[i] = true;
        self
    }

    /// The value of field `i`, trimmed.
    pub fn value(&self, i: usize) -> &str {
        self.values[i].trim()
    }

    /// Refuses the submit: says why and puts the cursor on field `i`.
    pub fn refuse(&mut self, i: usize, why: String) {
        self.focus = i;
        self.error = Some(why);
    }

    /// One key.
    pub fn input(&mut self, key: KeyEvent) -> FormKey {
        let n = self.values.len().max(1);
        match key.code {
            KeyCode::Esc => return FormKey::Cancel,
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % n,
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + n - 1) % n,
            KeyCode::Enter if self.focus + 1 < n => self.focus += 1,
            KeyCode::Enter => return FormKey::Submit,
            KeyCode::Backspace => {
                self.values[self.focus].pop();
            }
            KeyCode::Char(c) if !c.is_control() => {
                let v = &mut self.values[self.focus];
                if v.len() < MAX_LEN {
                    v.push(c);
                }
            }
            _ => {}
        }
        FormKey::Editing
    }

    /// Draws the pop-up in the middle of `area`.
    pub fn draw(&self, f: &mut Frame, area: Rect) {
        let mut lines: Vec<Line> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| ui::field(l, &self.values[i], self.masked[i], i == self.focus))
            .collect();
        lines.extend(self.hints.iter().map(|h| Line::styled(*h, ui::dim())));
        lines.push(Line::styled(
            "Tab: next field · Enter on the last: apply · Esc: cancel",
            ui::dim(),
        ));
        if let Some(e) = &self.error {
            lines.push(Line::from(vec![
                Span::styled("error: ", ui::bad()),
                Span::raw(e.clone()),
            ]));
        }
        let r = ui::centered(area, 70, lines.len() as u16 + 2);
        f.render_widget(Clear, r);
        let title = format!(" {} ", self.title);
        f.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
            r,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyModifiers;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn typing_moving_submitting_and_cancelling() {
        let mut f = Form::new("T", &[("a", ""), ("b", "x")]);
        assert_eq!(f.input(key(KeyCode::Char('1'))), FormKey::Editing);
        assert_eq!(f.input(key(KeyCode::Enter)), FormKey::Editing, "next field");
        f.input(key(KeyCode::Backspace));
        f.input(key(KeyCode::Char('y')));
        assert_eq!((f.value(0), f.value(1)), ("1", "y"));
        assert_eq!(f.input(key(KeyCode::Enter)), FormKey::Submit);
        f.refuse(0, "no".into());
        assert_eq!((f.focus, f.error.as_deref()), (0, Some("no")));
        assert_eq!(f.input(key(KeyCode::Up)), FormKey::Editing);
        assert_eq!(f.focus, 1, "wraps");
        assert_eq!(f.input(key(KeyCode::Esc)), FormKey::Cancel);
    }
}
