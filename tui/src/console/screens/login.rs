//! Login inside the console: username, password and TOTP code. The session is saved where
//! `sbcctl` keeps its own, so one login serves both.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use crate::console::action::{Action, Request};
use crate::console::ui;

/// The login form.
#[derive(Debug, Default)]
pub struct Login {
    /// The daemon's URL, shown in the title.
    pub url: String,
    /// Username.
    pub username: String,
    password: String,
    totp: String,
    focus: usize,
    /// A request is on its way.
    pub busy: bool,
    /// Why the last try failed.
    pub error: Option<String>,
}

impl Login {
    /// A form for `url`, the username prefilled (from the saved session).
    pub fn new(url: &str, username: Option<&str>) -> Login {
        let username = username.unwrap_or_default().to_owned();
        let focus = usize::from(!username.is_empty());
        Login {
            url: url.to_owned(),
            username,
            focus,
            ..Login::default()
        }
    }

    fn value(&mut self) -> &mut String {
        match self.focus {
            0 => &mut self.username,
            1 => &mut self.password,
            _ => &mut self.totp,
        }
    }

    /// A key; Enter on the last field (or with all filled) sends the login, Esc quits.
    pub fn input(&mut self, key: KeyEvent) -> Option<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        match key.code {
            KeyCode::Esc => return Some(Action::Quit),
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % 3,
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + 2) % 3,
            KeyCode::Backspace => {
                self.value().pop();
            }
            KeyCode::Enter => {
                if self.username.is_empty() {
                    self.focus = 0;
                } else if self.password.is_empty() {
                    self.focus = 1;
                } else if !self.busy {
                    self.busy = true;
                    self.error = None;
                    let totp = self.totp.trim().to_owned();
                    return Some(Action::Send(Request::Login {
                        username: self.username.clone(),
                        password: std::mem::take(&mut self.password),
                        totp: (!totp.is_empty()).then_some(totp),
                    }));
                }
            }
            KeyCode::Char(c) if !c.is_control() => {
                let limit = if self.focus == 2 { 16 } else { 256 };
                if self.focus == 2 && !c.is_ascii_digit() {
                    return None;
                }
                let v = self.value();
                if v.chars().count() < limit {
                    v.push(c);
                }
            }
            _ => {}
        }
        None
    }

    /// The login failed: the password and code are asked again.
    pub fn failed(&mut self, why: String) {
        self.busy = false;
        self.error = Some(why);
        self.password.clear();
        self.totp.clear();
        self.focus = 1;
    }

    /// Draws the form in the middle of `area`.
    pub fn draw(&self, f: &mut Frame, area: Rect) {
        let mut lines = vec![
            Line::from(Span::raw(format!("Log in to {}", self.url))),
            Line::raw(""),
            ui::field("username", &self.username, false, self.focus == 0),
            ui::field("password", &self.password, true, self.focus == 1),
            ui::field("TOTP code", &self.totp, false, self.focus == 2),
            Line::raw(""),
        ];
        if self.busy {
            lines.push(Line::from(Span::styled("logging in…", ui::dim())));
        } else if let Some(e) = &self.error {
            lines.push(Line::from(vec![
                Span::styled("error: ", ui::bad()),
                Span::raw(e.clone()),
            ]));
        } else {
            lines.push(Line::from(Span::styled(
                "Tab next field · Enter log in · Esc quit",
                ui::dim(),
            )));
        }
        let r = ui::centered(area, 64, lines.len() as u16 + 2);
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(Block::default().borders(Borders::ALL).title(" sbc-tui ")),
            r,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn typed(l: &mut Login, s: &str) {
        for c in s.chars() {
            assert_eq!(l.input(key(KeyCode::Char(c))), None);
        }
    }

    #[test]
    fn fills_the_fields_and_sends_the_login() {
        let mut l = Login::new("https://h:8443", None);
        typed(&mut l, "ops");
        assert_eq!(l.input(key(KeyCode::Enter)), None, "password still empty");
        typed(&mut l, "pw q");
        l.input(key(KeyCode::Tab));
        typed(&mut l, "12x3456");
        let sent = l.input(key(KeyCode::Enter));
        assert_eq!(
            sent,
            Some(Action::Send(Request::Login {
                username: "ops".into(),
                password: "pw q".into(),
                totp: Some("123456".into()),
            }))
        );
        assert!(l.busy);
        assert_eq!(l.input(key(KeyCode::Enter)), None, "one login at a time");
        l.failed("bad password".into());
        assert!(!l.busy && l.password.is_empty() && l.focus == 1);
        assert_eq!(l.input(key(KeyCode::Esc)), Some(Action::Quit));
    }
}
