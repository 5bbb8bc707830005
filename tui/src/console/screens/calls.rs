//! Live calls: sort, filter, `Enter` for the call's ladder, `K` to hang up (confirmed).

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};

use super::ladder::Ladder;
use super::{ListNav, Screen, empty_line};
use crate::console::action::{Action, Request};
use crate::console::data::Data;
use crate::console::keymap::{Command, Scope};
use crate::console::model::Call;
use crate::console::ui;

/// What the list is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// Longest first.
    #[default]
    Duration,
    /// Account id.
    Account,
    /// Calling number.
    From,
    /// Called number.
    To,
    /// Ringing before answered.
    State,
    /// Fewest media packets (both directions) first: dead calls on top.
    Packets,
    /// Most loss first.
    Loss,
    /// Longest without media first (no media at all before any).
    LastMedia,
}

impl SortBy {
    fn next(self) -> SortBy {
        match self {
            SortBy::Duration => SortBy::Account,
            SortBy::Account => SortBy::From,
            SortBy::From => SortBy::To,
            SortBy::To => SortBy::State,
            SortBy::State => SortBy::Packets,
            SortBy::Packets => SortBy::Loss,
            SortBy::Loss => SortBy::LastMedia,
            SortBy::LastMedia => SortBy::Duration,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SortBy::Duration => "duration",
            SortBy::Account => "account",
            SortBy::From => "from",
            SortBy::To => "to",
            SortBy::State => "state",
            SortBy::Packets => "packets",
            SortBy::Loss => "loss",
            SortBy::LastMedia => "last media",
        }
    }
}

/// The calls screen.
#[derive(Debug, Default)]
pub struct Calls {
    /// Selection and filter.
    pub nav: ListNav,
    /// Current sort.
    pub sort: SortBy,
    /// The open ladder, if any.
    pub ladder: Option<Ladder>,
    /// First row on screen.
    offset: usize,
}

fn row_text(c: &Call) -> String {
    format!(
        "{} {} {} {} {} {} {}",
        c.id,
        c.account_id,
        c.cli,
        c.cld,
        c.source,
        c.state(),
        c.call_id
    )
}

impl Calls {
    /// The calls shown, filtered and sorted.
    pub fn rows<'a>(&self, data: &'a Data) -> Vec<&'a Call> {
        let mut v: Vec<&Call> = data
            .calls
            .value
            .iter()
            .filter(|c| self.nav.filter.is_empty() || self.nav.filter.matches(&row_text(c)))
            .collect();
        match self.sort {
            SortBy::Duration => v.sort_by_key(|c| (c.started_ms, c.id)),
            SortBy::Account => v.sort_by_key(|c| (c.account_id, c.id)),
            SortBy::From => v.sort_by(|a, b| a.cli.cmp(&b.cli).then(a.id.cmp(&b.id))),
            SortBy::To => v.sort_by(|a, b| a.cld.cmp(&b.cld).then(a.id.cmp(&b.id))),
            SortBy::State => v.sort_by_key(|c| (c.answered, c.id)),
            SortBy::Packets => v.sort_by_key(|c| {
                let n = c.packets_out().unwrap_or(0) + c.packets_in().unwrap_or(0);
                (n, c.id)
            }),
            SortBy::Loss => v.sort_by(|a, b| {
                let l = |c: &Call| c.loss_pct().unwrap_or(-1.0);
                l(b).total_cmp(&l(a)).then(a.id.cmp(&b.id))
            }),
            SortBy::LastMedia => v.sort_by_key(|c| (c.last_media_ms().unwrap_or(0), c.id)),
        }
        v
    }

    fn selected_id(&self, data: &Data) -> Option<u64> {
        self.rows(data).get(self.nav.selected).map(|c| c.id)
    }
}

/// The confirmation of a hang-up.
pub fn hangup(id: u64, data: &Data) -> Action {
    let who = data
        .calls
        .value
        .iter()
        .find(|c| c.id == id)
        .map(|c| format!(" ({} → {})", c.cli, c.cld))
        .unwrap_or_default();
    Action::Confirm {
        prompt: format!("Hang up call #{id}{who}?"),
        request: Request::Hangup(id),
    }
}

impl Screen for Calls {
    fn scopes(&self) -> Vec<Scope> {
        if self.ladder.is_some() {
            vec![Scope::Ladder]
        } else {
            vec![Scope::Calls, Scope::List]
        }
    }

    fn editing(&self) -> bool {
        self.ladder.is_none() && self.nav.editing.is_some()
    }

    fn input(&mut self, key: KeyEvent, _data: &Data) -> Option<Action> {
        self.nav.input(key);
        None
    }

    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        if let Some(l) = self.ladder.as_mut() {
            if cmd == Command::Back {
                self.ladder = None;
                return None;
            }
            return l.command(cmd, data);
        }
        let len = self.rows(data).len();
        if self.nav.navigate(cmd, len) {
            return None;
        }
        match cmd {
            Command::Sort => {
                self.sort = self.sort.next();
                None
            }
            Command::Enter => {
                let id = self.selected_id(data)?;
                self.ladder = Some(Ladder::new(id));
                Some(Action::Send(Request::Messages(id)))
            }
            Command::Hangup => self.selected_id(data).map(|id| hangup(id, data)),
            _ => None,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, now_ms: u64) {
        if let Some(l) = self.ladder.as_mut() {
            l.draw(f, area, data, now_ms);
            return;
        }
        let rows = self.rows(data);
        self.nav.clamp(rows.len());
        let [list, foot] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
        let block = Block::default()
            .borders(Borders::ALL)
            .title(format!(" Live calls · sorted by {} ", self.sort.name()));
        if rows.is_empty() {
            let what = if data.calls.value.is_empty() {
                "live calls"
            } else {
                "calls match the filter"
            };
            f.render_widget(
                Paragraph::new(empty_line(
                    data.calls.loaded,
                    data.calls.error.as_deref(),
                    what,
                ))
                .block(block),
                list,
            );
        } else {
            // Wide: every column. Narrow (80 columns): the media columns an engineer on shift
            // watches stay; the source address, connection and loss give way. Loss is lost
            // packets per direction and the percentage over both, `-` where the daemon
            // does not report it.
            let wide = area.width >= 110;
            let (party, pkts) = if wide { (14, 13) } else { (13, 11) };
            let mut header = vec!["#", "Acct", "From", "To"];
            let mut widths = vec![
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Length(party),
                Constraint::Length(party),
            ];
            if wide {
                header.extend(["Source", "Conn"]);
                widths.extend([Constraint::Fill(1), Constraint::Length(4)]);
            }
            header.extend(["State", "Dur", "Pkts →/←"]);
            widths.extend([
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(pkts),
            ]);
            if wide {
                header.push("Lost →/← (%)");
                widths.push(Constraint::Length(14));
            }
            header.push("Media");
            widths.push(Constraint::Length(7));
            // Only the rows on screen are built: a busy box has thousands of calls.
            let page = (list.height.saturating_sub(3) as usize).max(1);
            if self.nav.selected < self.offset {
                self.offset = self.nav.selected;
            } else if self.nav.selected >= self.offset + page {
                self.offset = self.nav.selected + 1 - page;
            }
            self.offset = self.offset.min(rows.len().saturating_sub(1));
            let table_rows: Vec<Row> = rows
                .iter()
                .skip(self.offset)
                .take(page)
                .map(|c| {
                    let dur = ui::duration(
                        now_ms.saturating_sub(c.answered_ms.unwrap_or(c.started_ms)) / 1000,
                    );
                    let n = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
                    let mut cells = vec![
                        c.id.to_string(),
                        c.account_id.to_string(),
                        c.cli.clone(),
                        c.cld.clone(),
                    ];
                    if wide {
                        cells.push(c.source.clone());
                        cells.push(c.connection_id.map_or("-".into(), |i| i.to_string()));
                    }
                    cells.extend([
                        c.state().to_owned(),
                        dur,
                        format!("{}/{}", n(c.packets_out()), n(c.packets_in())),
                    ]);
                    if wide {
                        cells.push(loss_cell(c));
                    }
                    // How long ago; "!" (and the warning colour) once an answered call has
                    // had no media for a while, which monochrome terminals still show.
                    let quiet = c.media_quiet(now_ms);
                    let ago = c.last_media_ms().map_or("-".into(), |m| {
                        ui::duration(now_ms.saturating_sub(m) / 1000)
                    });
                    cells.push(if quiet { format!("!{ago}") } else { ago });
                    let row = Row::new(cells);
                    if quiet { row.style(ui::warn()) } else { row }
                })
                .collect();
            let table = Table::new(table_rows, widths)
                .header(Row::new(header).style(ui::strong()))
                .row_highlight_style(ui::selected())
                .highlight_symbol("▶")
                .block(block);
            self.nav.page = page;
            let mut st = TableState::default()
                .with_selected(Some(self.nav.selected.saturating_sub(self.offset)));
            f.render_stateful_widget(table, list, &mut st);
        }
        let total = data.calls.value.len();
        f.render_widget(Paragraph::new(self.nav.footer(rows.len(), total)), foot);
    }

    fn refresh(&self, _data: &Data) -> Vec<Request> {
        match &self.ladder {
            Some(l) => vec![Request::Messages(l.call)],
            None => vec![Request::Calls],
        }
    }
}

/// `lost →/lost ← (pct%)`, `-` for a direction (or a call) without the figure.
pub fn loss_cell(c: &Call) -> String {
    let Some((out, back)) = c.lost() else {
        return "-".into();
    };
    let n = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    let pct = c.loss_pct().unwrap_or(0.0);
    format!("{}/{} {pct:.1}%", n(out), n(back))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::model::{CallMedia, MediaDirection};
    use crossterm::event::{KeyCode, KeyModifiers};

    #[test]
    fn loss_shows_each_direction_and_the_percentage() {
        let dir = |packets, lost, expected| MediaDirection {
            packets,
            lost,
            expected,
            ..MediaDirection::default()
        };
        let call = |a, b| Call {
            media: Some(CallMedia {
                caller_to_vendor: a,
                vendor_to_caller: b,
                plane: None,
            }),
            ..Call::default()
        };
        assert_eq!(loss_cell(&Call::default()), "-", "no media");
        assert_eq!(
            loss_cell(&call(dir(10, None, None), dir(10, None, None))),
            "-"
        );
        // 30 lost of 1,000 + 1,000 expected.
        let c = call(
            dir(990, Some(10), Some(1000)),
            dir(980, Some(20), Some(1000)),
        );
        assert_eq!(loss_cell(&c), "10/20 1.5%");
        // No `expected`: relayed plus lost; one direction without the figure.
        let c = call(dir(95, Some(5), None), dir(100, None, None));
        assert_eq!(loss_cell(&c), "5/- 2.5%");
    }

    fn data() -> Data {
        let mut d = Data::default();
        d.calls.set(
            [
                (7, "441", "449", 300),
                (3, "331", "339", 100),
                (9, "442", "100", 200),
            ]
            .into_iter()
            .map(|(id, cli, cld, t)| Call {
                id,
                cli: cli.into(),
                cld: cld.into(),
                started_ms: t,
                ..Call::default()
            })
            .collect(),
        );
        d
    }

    #[test]
    fn sort_filter_drill_and_hangup() {
        let d = data();
        let mut c = Calls::default();
        let ids = |c: &Calls| c.rows(&d).iter().map(|k| k.id).collect::<Vec<_>>();
        assert_eq!(ids(&c), [3, 9, 7], "oldest first");
        c.command(Command::Sort, &d);
        c.command(Command::Sort, &d);
        assert_eq!(c.sort, SortBy::From);
        assert_eq!(ids(&c), [3, 7, 9]);
        c.command(Command::Filter, &d);
        assert!(c.editing());
        for ch in "!44".chars() {
            c.input(KeyEvent::new(KeyCode::Char(ch), KeyModifiers::NONE), &d);
        }
        c.input(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), &d);
        assert!(!c.editing());
        assert_eq!(ids(&c), [3]);
        assert_eq!(
            c.command(Command::Hangup, &d),
            Some(Action::Confirm {
                prompt: "Hang up call #3 (331 → 339)?".into(),
                request: Request::Hangup(3)
            })
        );
        assert_eq!(
            c.command(Command::Enter, &d),
            Some(Action::Send(Request::Messages(3)))
        );
        assert_eq!(c.scopes(), [Scope::Ladder]);
        assert_eq!(c.command(Command::Back, &d), None);
        assert!(c.ladder.is_none());
        c.command(Command::Filter, &d);
        c.input(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE), &d);
        c.command(Command::Bottom, &d);
        assert_eq!(c.nav.selected, 2);
        c.command(Command::Top, &d);
        c.command(Command::Down, &d);
        assert_eq!(c.nav.selected, 1);
    }

    fn with_media(id: u64, out: u64, back: u64, last_ms: Option<u64>) -> Call {
        use crate::console::model::{CallMedia, MediaDirection};
        let dir = |packets| MediaDirection {
            packets,
            last_seen_ms: last_ms,
            ..MediaDirection::default()
        };
        Call {
            id,
            answered: true,
            answered_ms: Some(1_000),
            started_ms: 0,
            media: Some(CallMedia {
                caller_to_vendor: dir(out),
                vendor_to_caller: dir(back),
                plane: None,
            }),
            ..Call::default()
        }
    }

    /// The media columns sort (quietest and emptiest first) and a call silent for more than
    /// five seconds is marked; ringing calls and calls without media never are.
    #[test]
    fn media_sorts_and_quiet_calls_are_marked() {
        let mut d = Data::default();
        d.calls.set(vec![
            with_media(1, 500, 490, Some(19_000)),
            with_media(2, 10, 0, Some(12_000)),
            with_media(3, 0, 0, None),
            Call {
                id: 4,
                ..Call::default()
            },
        ]);
        let mut c = Calls::default();
        let ids = |c: &Calls| c.rows(&d).iter().map(|k| k.id).collect::<Vec<_>>();
        while c.sort != SortBy::Packets {
            c.command(Command::Sort, &d);
        }
        assert_eq!(ids(&c), [3, 4, 2, 1]);
        c.command(Command::Sort, &d);
        assert_eq!(c.sort, SortBy::Loss);
        c.command(Command::Sort, &d);
        assert_eq!(c.sort, SortBy::LastMedia);
        assert_eq!(ids(&c), [3, 4, 2, 1]);
        let now = 20_000;
        let quiet: Vec<bool> = d.calls.value.iter().map(|k| k.media_quiet(now)).collect();
        assert_eq!(quiet, [false, true, true, false]);
        c.command(Command::Sort, &d);
        assert_eq!(c.sort, SortBy::Duration);
    }
}
