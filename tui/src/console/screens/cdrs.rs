//! Call records, newest first. The daemon filters by account, result and time (`F` opens
//! the form; `t` cycles the window 1h, 24h, 7d, all; `o` the result: all, answered,
//! failed), and `/` filters what came back (e.g. `^4420`, `!200`).

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::Row;

use super::bans::parse_duration;
use super::form::{Form, FormKey};
use super::{ListNav, ListView, Screen, draw_list};
use crate::console::action::{Action, CdrQuery, Request};
use crate::console::data::Data;
use crate::console::keymap::{Command, Scope};
use crate::console::model::Cdr;
use crate::console::ui;

/// How many records the screen asks for at most.
pub const CDR_LIMIT: usize = 10_000;
/// The windows `t` goes through (`None`: all time).
pub const WINDOWS: [Option<u64>; 4] = [Some(3600), Some(86_400), Some(7 * 86_400), None];

/// The CDR screen.
#[derive(Debug, Default)]
pub struct Cdrs {
    /// Selection and filter.
    pub nav: ListNav,
    /// What the daemon is asked for.
    pub query: CdrQuery,
    /// The open filter form.
    pub form: Option<Form>,
}

/// The query's words for the title: `last hour`, `acct 3`, `answered`, …
pub fn describe(q: &CdrQuery, data: &Data) -> String {
    let mut parts = Vec::new();
    match (q.from_ms, q.to_ms, q.window_secs) {
        (Some(f), Some(t), _) => {
            parts.push(format!("{} to {}", ui::date_time(f), ui::date_time(t)))
        }
        (Some(f), None, _) => parts.push(format!("since {}", ui::date_time(f))),
        (None, Some(t), _) => parts.push(format!("before {}", ui::date_time(t))),
        (None, None, Some(3600)) => parts.push("last hour".into()),
        (None, None, Some(w)) => parts.push(format!("last {}", window_name(w))),
        (None, None, None) => parts.push("all time".into()),
    }
    if let Some(a) = q.account {
        let name = data.accounts.value.0.iter().find(|x| x.id == a);
        parts.push(match name {
            Some(x) => format!("account {} (#{a})", x.name),
            None => format!("account #{a}"),
        });
    }
    if let Some(r) = &q.result {
        parts.push(r.clone());
    }
    parts.join(" · ")
}

fn window_name(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn time_text(ms: Option<u64>) -> String {
    ms.map(ui::date_time).unwrap_or_default()
}

impl Cdrs {
    fn filter_form(&self, data: &Data) -> Form {
        let q = &self.query;
        let account = q.account.map_or(String::new(), |a| {
            data.accounts
                .value
                .0
                .iter()
                .find(|x| x.id == a)
                .map_or(a.to_string(), |x| x.name.clone())
        });
        let since = match (q.from_ms, q.window_secs) {
            (Some(f), _) => time_text(Some(f)),
            (None, Some(w)) => window_name(w),
            (None, None) => String::new(),
        };
        Form::new(
            "CDR filters",
            &[
                ("account", &account),
                ("result", q.result.as_deref().unwrap_or("")),
                ("since", &since),
                ("until", &time_text(q.to_ms)),
            ],
        )
        .hint(&[
            "account: id or name; result: answered, failed or a code",
            "since: 1h, 24h, 7d or UTC 2026-05-01T13:45; empty: all time",
            "until: a UTC time; empty: now",
        ])
    }

    /// The query the form asks for, or which field is wrong and why.
    fn parse_form(form: &Form, data: &Data) -> Result<CdrQuery, (usize, String)> {
        let account = match form.value(0) {
            "" => None,
            s if s.bytes().all(|b| b.is_ascii_digit()) => {
                Some(s.parse().map_err(|_| (0, format!("{s}: too large")))?)
            }
            s => Some(
                data.accounts
                    .value
                    .0
                    .iter()
                    .find(|a| a.name.eq_ignore_ascii_case(s))
                    .map(|a| a.id)
                    .ok_or_else(|| {
                        (
                            0,
                            format!("no account {s:?} known (give its id, or open screen 5 first)"),
                        )
                    })?,
            ),
        };
        let result = match form.value(1).to_ascii_lowercase().as_str() {
            "" | "all" => None,
            r @ ("answered" | "failed") => Some(r.to_owned()),
            c => match c.parse::<u16>() {
                Ok(code) if (100..700).contains(&code) => Some(code.to_string()),
                _ => return Err((1, format!("{c:?}: answered, failed or a SIP status code"))),
            },
        };
        let since = form.value(2);
        let relative = since.ends_with(['s', 'm', 'h', 'd']) && !since.contains('-');
        let (window_secs, from_ms) = match since {
            "" => (None, None),
            s if relative => (parse_duration(s).map_err(|e| (2, e))?, None),
            s => (None, Some(crate::table::parse_time(s).map_err(|e| (2, e))?)),
        };
        let to_ms = match form.value(3) {
            "" => None,
            s => Some(crate::table::parse_time(s).map_err(|e| (3, e))?),
        };
        if let (Some(f), Some(t)) = (from_ms, to_ms)
            && t <= f
        {
            return Err((3, "until must be after since".into()));
        }
        Ok(CdrQuery {
            account,
            result,
            window_secs,
            from_ms,
            to_ms,
        })
    }

    /// Asks for the records again under a new query.
    fn requery(&mut self, q: CdrQuery) -> Option<Action> {
        self.query = q;
        self.nav.selected = 0;
        Some(Action::Send(Request::Cdrs(self.query.clone())))
    }
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
        vec![Scope::Cdrs, Scope::List]
    }

    fn editing(&self) -> bool {
        self.form.is_some() || self.nav.editing.is_some()
    }

    fn input(&mut self, key: KeyEvent, data: &Data) -> Option<Action> {
        let Some(form) = self.form.as_mut() else {
            self.nav.input(key);
            return None;
        };
        match form.input(key) {
            FormKey::Editing => None,
            FormKey::Cancel => {
                self.form = None;
                None
            }
            FormKey::Submit => match Self::parse_form(form, data) {
                Ok(q) => {
                    self.form = None;
                    self.requery(q)
                }
                Err((i, why)) => {
                    form.refuse(i, why);
                    None
                }
            },
        }
    }

    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        if self.nav.navigate(cmd, self.shown(data).len()) {
            return None;
        }
        match cmd {
            Command::Filters => {
                self.form = Some(self.filter_form(data));
                None
            }
            Command::Window => {
                let at = WINDOWS.iter().position(|w| *w == self.query.window_secs);
                let next = at.map_or(0, |i| (i + 1) % WINDOWS.len());
                let q = CdrQuery {
                    window_secs: WINDOWS[next],
                    from_ms: None,
                    to_ms: None,
                    ..self.query.clone()
                };
                self.requery(q)
            }
            Command::Outcome => {
                let result = match self.query.result.as_deref() {
                    None => Some("answered".to_owned()),
                    Some("answered") => Some("failed".to_owned()),
                    _ => None,
                };
                let q = CdrQuery {
                    result,
                    ..self.query.clone()
                };
                self.requery(q)
            }
            _ => None,
        }
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
                title: format!(
                    " Call records · {} · newest first ",
                    describe(&self.query, data)
                ),
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
        if let Some(form) = &self.form {
            form.draw(f, area);
        }
    }

    fn refresh(&self, _data: &Data) -> Vec<Request> {
        vec![Request::Cdrs(self.query.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::model::Account;
    use crossterm::event::{KeyCode, KeyModifiers};

    fn typed(s: &mut Cdrs, d: &Data, text: &str) -> Option<Action> {
        let mut last = None;
        for c in text.chars() {
            let code = match c {
                '\t' => KeyCode::Tab,
                '\n' => KeyCode::Enter,
                c => KeyCode::Char(c),
            };
            last = s.input(KeyEvent::new(code, KeyModifiers::NONE), d);
        }
        last
    }

    fn sent(a: Option<Action>) -> CdrQuery {
        match a {
            Some(Action::Send(Request::Cdrs(q))) => q,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_cycle_the_window_and_the_result() {
        let d = Data::default();
        let mut s = Cdrs::default();
        assert_eq!(s.refresh(&d), vec![Request::Cdrs(CdrQuery::default())]);
        assert_eq!(
            sent(s.command(Command::Window, &d)).window_secs,
            Some(86_400)
        );
        assert_eq!(
            sent(s.command(Command::Window, &d)).window_secs,
            Some(604_800)
        );
        assert_eq!(sent(s.command(Command::Window, &d)).window_secs, None);
        assert_eq!(sent(s.command(Command::Window, &d)).window_secs, Some(3600));
        let q = sent(s.command(Command::Outcome, &d));
        assert_eq!(q.result.as_deref(), Some("answered"));
        assert_eq!(describe(&q, &d), "last hour · answered");
        assert_eq!(
            sent(s.command(Command::Outcome, &d)).result.as_deref(),
            Some("failed")
        );
        assert_eq!(sent(s.command(Command::Outcome, &d)).result, None);
    }

    #[test]
    fn the_form_checks_and_sends_the_filters() {
        let mut d = Data::default();
        d.accounts.set((
            vec![Account {
                id: 7,
                name: "acme".into(),
                ..Account::default()
            }],
            vec![],
        ));
        let mut s = Cdrs::default();
        s.command(Command::Filters, &d);
        assert!(s.editing());
        // A name nobody has: refused, the form stays on the field.
        assert_eq!(typed(&mut s, &d, "nobody\t\t\t\n"), None);
        let form = s.form.as_ref().unwrap();
        assert_eq!(form.focus, 0);
        assert!(form.error.as_deref().unwrap().contains("nobody"));
        s.form.as_mut().unwrap().values = vec![String::new(); 4];
        let q = sent(typed(&mut s, &d, "acme\t486\t2026-05-01\t2026-05-02\n"));
        assert_eq!(
            q,
            CdrQuery {
                account: Some(7),
                result: Some("486".into()),
                window_secs: None,
                from_ms: Some(1_777_593_600_000),
                to_ms: Some(1_777_680_000_000),
            }
        );
        assert!(!s.editing());
        assert_eq!(
            describe(&q, &d),
            "2026-05-01 00:00:00 to 2026-05-02 00:00:00 · account acme (#7) · 486"
        );
        s.command(Command::Filters, &d);
        s.form.as_mut().unwrap().values = vec![String::new(); 4];
        assert_eq!(typed(&mut s, &d, "\tbusy\t\t\n"), None, "refused");
        assert_eq!(s.form.as_ref().unwrap().focus, 1);
        s.form.as_mut().unwrap().values =
            vec!["7".into(), "failed".into(), "24h".into(), String::new()];
        s.form.as_mut().unwrap().focus = 3;
        let q = sent(typed(&mut s, &d, "\n"));
        assert_eq!(
            (q.account, q.window_secs, q.from_ms),
            (Some(7), Some(86_400), None)
        );
        let esc = KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE);
        s.command(Command::Filters, &d);
        assert_eq!(s.input(esc, &d), None);
        assert!(!s.editing());
    }
}
