//! Bans: `u` unbans the selected prefix, `b` opens a form (address or prefix, duration,
//! note); both ask before they change anything. Each ban shows its rule, hits and evidence
//! (and first and last seen where the width allows); `n` switches to the sources the IDS
//! never bans.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Table, TableState};

use super::{ListNav, Screen, empty_line};
use crate::console::action::{Action, Request};
use crate::console::data::Data;
use crate::console::keymap::{Command, Scope};
use crate::console::model::{Ban, NeverBan};
use crate::console::ui;

/// The `b` form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BanForm {
    /// Address or prefix.
    pub addr: String,
    /// `30m`, `1h`, `2d`, seconds, or empty for permanent.
    pub duration: String,
    /// The operator's note.
    pub note: String,
    focus: usize,
    /// Why the form was refused.
    pub error: Option<String>,
}

/// Parses `90`, `30s`, `15m`, `2h`, `7d`; empty or `perm` is permanent (`None`).
pub fn parse_duration(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("perm") || s.eq_ignore_ascii_case("permanent") {
        return Ok(None);
    }
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a number and s, m, h or d (e.g. 30m)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?}: more than zero, at most ten years")),
        Some(v) => Ok(Some(v)),
    }
}

/// Checks an address or prefix as the API will (no host bits set).
pub fn check_prefix(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    let net: ipnet::IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not an address or prefix"))?;
    if net.trunc() != net {
        return Err(format!(
            "{s} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net.to_string())
}

impl BanForm {
    fn value(&mut self) -> &mut String {
        match self.focus {
            0 => &mut self.addr,
            1 => &mut self.duration,
            _ => &mut self.note,
        }
    }

    /// A key; `Some(Ok(action))` when submitted and valid, `Some(Err(()))` when cancelled.
    pub fn input(&mut self, key: KeyEvent) -> Option<Result<Action, ()>> {
        match key.code {
            KeyCode::Esc => return Some(Err(())),
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % 3,
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + 2) % 3,
            KeyCode::Backspace => {
                self.value().pop();
            }
            KeyCode::Enter if self.focus < 2 => self.focus += 1,
            KeyCode::Enter => match self.validate() {
                Ok(a) => return Some(Ok(a)),
                Err(e) => self.error = Some(e),
            },
            KeyCode::Char(c) if !c.is_control() => {
                let v = self.value();
                if v.len() < 200 {
                    v.push(c);
                }
            }
            _ => {}
        }
        None
    }

    fn validate(&mut self) -> Result<Action, String> {
        let addr = check_prefix(&self.addr).inspect_err(|_| self.focus = 0)?;
        let secs = parse_duration(&self.duration).inspect_err(|_| self.focus = 1)?;
        let note = self.note.trim().to_owned();
        let how_long = secs.map_or("permanently".into(), |s| format!("for {}", ui::duration(s)));
        Ok(Action::Confirm {
            prompt: format!("Ban {addr} {how_long}?"),
            request: Request::Ban {
                addr,
                duration_secs: secs,
                reason: (!note.is_empty()).then_some(note),
            },
        })
    }

    fn draw(&self, f: &mut Frame, area: Rect) {
        let mut lines = vec![
            ui::field("address", &self.addr, false, self.focus == 0),
            ui::field("duration", &self.duration, false, self.focus == 1),
            ui::field("note", &self.note, false, self.focus == 2),
            Line::styled("duration: 30m, 2h, 7d; empty = permanent", ui::dim()),
        ];
        if let Some(e) = &self.error {
            lines.push(Line::from(vec![
                Span::styled("error: ", ui::bad()),
                Span::raw(e.clone()),
            ]));
        }
        let r = ui::centered(area, 60, lines.len() as u16 + 2);
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" Ban ")),
            r,
        );
    }
}

/// The bans screen.
#[derive(Debug, Default)]
pub struct Bans {
    /// Selection and filter.
    pub nav: ListNav,
    /// The open ban form.
    pub form: Option<BanForm>,
    /// Showing the never-banned sources instead of the bans.
    pub never: bool,
}

/// Wide enough for the first and last seen columns.
const WIDE: u16 = 110;

fn row_text(b: &Ban) -> String {
    format!(
        "{} {} {} {} {} {}",
        b.prefix,
        b.reason,
        b.by,
        b.rule,
        b.note.as_deref().unwrap_or(""),
        b.evidence_line()
    )
}

impl Bans {
    /// The bans shown: filtered, permanent and longest-lasting first.
    pub fn rows<'a>(&self, data: &'a Data) -> Vec<&'a Ban> {
        let mut v: Vec<&Ban> = data
            .bans
            .value
            .iter()
            .filter(|b| self.nav.filter.matches(&row_text(b)))
            .collect();
        v.sort_by(|a, b| {
            let key = |x: &Ban| x.expires_ms.unwrap_or(u64::MAX);
            key(b).cmp(&key(a)).then(a.prefix.cmp(&b.prefix))
        });
        v
    }
}

impl Screen for Bans {
    fn scopes(&self) -> Vec<Scope> {
        vec![Scope::Bans, Scope::List]
    }

    fn editing(&self) -> bool {
        self.form.is_some() || self.nav.editing.is_some()
    }

    fn input(&mut self, key: KeyEvent, _data: &Data) -> Option<Action> {
        if let Some(form) = self.form.as_mut() {
            return match form.input(key)? {
                Ok(a) => {
                    self.form = None;
                    Some(a)
                }
                Err(()) => {
                    self.form = None;
                    None
                }
            };
        }
        self.nav.input(key);
        None
    }

    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        let rows = self.rows(data);
        if self.nav.navigate(cmd, rows.len()) {
            return None;
        }
        match cmd {
            Command::Ban => {
                self.form = Some(BanForm::default());
                None
            }
            Command::NeverBans => {
                self.never = !self.never;
                self.never.then_some(Action::Send(Request::NeverBans))
            }
            Command::Unban if !self.never => {
                let b = rows.get(self.nav.selected)?;
                Some(Action::Confirm {
                    prompt: format!("Unban {} ({}, by {})?", b.prefix, b.reason, b.by),
                    request: Request::Unban(b.prefix.clone()),
                })
            }
            _ => None,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, now_ms: u64) {
        if self.never {
            draw_never(f, area, data);
            if let Some(form) = &self.form {
                form.draw(f, area);
            }
            return;
        }
        let rows = self.rows(data);
        self.nav.clamp(rows.len());
        let [list, foot] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
        let block = Block::default().borders(Borders::ALL).title(" Bans ");
        if rows.is_empty() {
            let what = if data.bans.value.is_empty() {
                "bans"
            } else {
                "bans match the filter"
            };
            f.render_widget(
                Paragraph::new(empty_line(
                    data.bans.loaded,
                    data.bans.error.as_deref(),
                    what,
                ))
                .block(block),
                list,
            );
        } else {
            let wide = area.width >= WIDE;
            let ago = |t: u64| {
                if t == 0 {
                    "-".to_owned()
                } else {
                    format!("{} ago", ui::duration(now_ms.saturating_sub(t) / 1000))
                }
            };
            let table_rows: Vec<Row> = rows
                .iter()
                .map(|b| {
                    let left = match b.expires_ms {
                        None => "permanent".to_owned(),
                        Some(_) if b.expired => "expired".to_owned(),
                        Some(t) => ui::duration(t.saturating_sub(now_ms) / 1000),
                    };
                    // The operator's note for their bans, what the IDS saw for its own.
                    let why = match &b.note {
                        Some(n) => n.clone(),
                        None => b.evidence_line(),
                    };
                    let rule = if b.rule.is_empty() {
                        b.by.clone()
                    } else {
                        b.rule.clone()
                    };
                    // The rule says more than the data plane's reason (which the filter
                    // still matches).
                    let mut cells = vec![b.prefix.clone(), rule, left];
                    cells.push(b.hits.to_string());
                    if wide {
                        cells.push(ago(b.first_seen_ms));
                        cells.push(ago(b.last_seen_ms));
                    }
                    cells.push(why);
                    Row::new(cells)
                })
                .collect();
            let (widths, header): (Vec<Constraint>, Vec<&str>) = if wide {
                (
                    vec![
                        Constraint::Length(20),
                        Constraint::Length(18),
                        Constraint::Length(10),
                        Constraint::Length(6),
                        Constraint::Length(11),
                        Constraint::Length(11),
                        Constraint::Min(0),
                    ],
                    vec![
                        "Prefix", "Rule", "Left", "Hits", "First", "Last", "Evidence",
                    ],
                )
            } else {
                (
                    vec![
                        Constraint::Length(19),
                        Constraint::Length(13),
                        Constraint::Length(9),
                        Constraint::Length(5),
                        Constraint::Min(0),
                    ],
                    vec!["Prefix", "Rule", "Left", "Hits", "Evidence"],
                )
            };
            let table = Table::new(table_rows, widths)
                .header(Row::new(header).style(ui::strong()))
                .row_highlight_style(ui::selected())
                .highlight_symbol("▶")
                .block(block);
            self.nav.page = list.height.saturating_sub(3) as usize;
            let mut st = TableState::default().with_selected(Some(self.nav.selected));
            f.render_stateful_widget(table, list, &mut st);
        }
        f.render_widget(
            Paragraph::new(self.nav.footer(rows.len(), data.bans.value.len())),
            foot,
        );
        if let Some(form) = &self.form {
            form.draw(f, area);
        }
    }

    fn refresh(&self, _data: &Data) -> Vec<Request> {
        if self.never {
            vec![Request::Bans, Request::NeverBans]
        } else {
            vec![Request::Bans]
        }
    }
}

/// An IDS rule's name in the never-ban table.
fn short_rule(r: &str) -> &str {
    match r {
        "brute-force" => "brute",
        "enumeration" => "enum",
        "dialog-probe" => "probe",
        other => other,
    }
}

/// The sources the IDS never bans (for some rules), from the provisioned records.
fn draw_never(f: &mut Frame, area: Rect, data: &Data) {
    let [list, foot] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" Never banned (n: back to the bans) ");
    let v: &[NeverBan] = &data.never.value;
    if v.is_empty() {
        f.render_widget(
            Paragraph::new(empty_line(
                data.never.loaded,
                data.never.error.as_deref(),
                "sources the IDS spares (no ip-only carriers or upstreams)",
            ))
            .block(block),
            list,
        );
    } else {
        // The name only where it fits; rule names shortened so both lists fit 80 columns.
        let wide = area.width >= WIDE;
        let rules = |v: &[String]| {
            v.iter()
                .map(|r| short_rule(r))
                .collect::<Vec<_>>()
                .join(",")
        };
        let rows: Vec<Row> = v
            .iter()
            .map(|n| {
                let mut cells = vec![
                    n.prefix.clone(),
                    if n.source == "ip_only_rule" {
                        "ip-only".to_owned()
                    } else {
                        n.source.clone()
                    },
                ];
                if wide {
                    cells.push(n.name.clone());
                }
                cells.push(rules(&n.spared));
                cells.push(rules(&n.still_banned_for));
                Row::new(cells)
            })
            .collect();
        let mut widths = vec![Constraint::Length(19), Constraint::Length(8)];
        let mut header = vec!["Prefix", "Source"];
        if wide {
            widths.push(Constraint::Length(20));
            header.push("Name");
        }
        widths.extend([Constraint::Length(28), Constraint::Min(0)]);
        header.extend(["Never banned for", "Still banned for"]);
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(ui::strong()))
            .block(block);
        f.render_widget(table, list);
    }
    f.render_widget(
        Paragraph::new(Line::styled(
            "operators can ban any of these; a scanner's User-Agent bans anyone",
            ui::dim(),
        )),
        foot,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyModifiers;

    fn k(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn durations_and_prefixes() {
        assert_eq!(parse_duration(""), Ok(None));
        assert_eq!(parse_duration("90"), Ok(Some(90)));
        assert_eq!(parse_duration("30m"), Ok(Some(1800)));
        assert_eq!(parse_duration("2d"), Ok(Some(172_800)));
        assert!(parse_duration("0").is_err() && parse_duration("5w").is_err());
        assert_eq!(check_prefix("192.0.2.7"), Ok("192.0.2.7".into()));
        assert_eq!(check_prefix("192.0.2.0/24"), Ok("192.0.2.0/24".into()));
        assert!(
            check_prefix("192.0.2.7/24")
                .unwrap_err()
                .contains("192.0.2.0/24")
        );
        assert!(check_prefix("nope").is_err());
    }

    #[test]
    fn ban_form_and_unban_ask_first() {
        let mut d = Data::default();
        d.bans.set(vec![Ban {
            prefix: "198.51.100.9/32".into(),
            reason: "scanner".into(),
            by: "ids".into(),
            ..Ban::default()
        }]);
        let mut s = Bans::default();
        assert!(matches!(
            s.command(Command::Unban, &d),
            Some(Action::Confirm { request: Request::Unban(p), .. }) if p == "198.51.100.9/32"
        ));
        s.command(Command::Ban, &d);
        assert!(s.editing());
        for c in "10.0.0.1/8".chars() {
            s.input(k(KeyCode::Char(c)), &d);
        }
        s.input(k(KeyCode::Enter), &d);
        for c in "1h".chars() {
            s.input(k(KeyCode::Char(c)), &d);
        }
        s.input(k(KeyCode::Enter), &d);
        assert_eq!(s.input(k(KeyCode::Enter), &d), None, "host bits: refused");
        assert!(s.form.as_ref().unwrap().error.is_some());
        for _ in 0..3 {
            s.input(k(KeyCode::Backspace), &d);
        }
        s.input(k(KeyCode::Char('1')), &d);
        assert_eq!(s.form.as_ref().unwrap().addr, "10.0.0.1");
        s.input(k(KeyCode::Tab), &d);
        s.input(k(KeyCode::Tab), &d);
        let a = s.input(k(KeyCode::Enter), &d);
        assert_eq!(
            a,
            Some(Action::Confirm {
                prompt: "Ban 10.0.0.1 for 1h00m?".into(),
                request: Request::Ban {
                    addr: "10.0.0.1".into(),
                    duration_secs: Some(3600),
                    reason: None
                }
            })
        );
        assert!(!s.editing());
        s.command(Command::Ban, &d);
        s.input(k(KeyCode::Esc), &d);
        assert!(s.form.is_none());
    }
}
