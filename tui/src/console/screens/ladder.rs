//! A call's SIP ladder, sngrep style: caller | SBC | vendor columns, one arrow per message
//! with its method or status and time since the first, and the selected message raw.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use crate::console::action::Action;
use crate::console::data::Data;
use crate::console::keymap::Command;
use crate::console::model::Message;
use crate::console::ui;

/// The ladder of one call.
#[derive(Debug)]
pub struct Ladder {
    /// The call id.
    pub call: u64,
    /// Selected message.
    pub selected: usize,
    offset: usize,
    /// The raw message pane is shown.
    pub raw: bool,
}

impl Ladder {
    /// A ladder for call `call`, its messages asked for by the caller.
    pub fn new(call: u64) -> Ladder {
        Ladder {
            call,
            selected: 0,
            offset: 0,
            raw: true,
        }
    }

    fn messages<'a>(&self, data: &'a Data) -> &'a [Message] {
        match &data.messages.value {
            Some(m) if m.id == self.call => &m.messages,
            _ => &[],
        }
    }

    /// A command while the ladder is open (`Back` is the calls screen's).
    pub fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        let last = self.messages(data).len().saturating_sub(1);
        match cmd {
            Command::Up => self.selected = self.selected.saturating_sub(1),
            Command::Down => self.selected = (self.selected + 1).min(last),
            Command::Top => self.selected = 0,
            Command::Bottom => self.selected = last,
            Command::Raw => self.raw = !self.raw,
            Command::Hangup => return Some(super::calls::hangup(self.call, data)),
            _ => {}
        }
        None
    }

    /// Draws the ladder and, if shown, the raw pane (beside it when wide, under it when not).
    pub fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, _now_ms: u64) {
        let msgs = self.messages(data);
        self.selected = self.selected.min(msgs.len().saturating_sub(1));
        let title = match data.calls.value.iter().find(|c| c.id == self.call) {
            Some(c) => format!(
                " Call #{} {} → {} · {} ",
                self.call, c.cli, c.cld, c.call_id
            ),
            None => format!(" Call #{} ", self.call),
        };
        let (ladder_area, raw_area) = if !self.raw || msgs.is_empty() {
            (area, None)
        } else if area.width >= 120 {
            let [a, b] =
                Layout::horizontal([Constraint::Percentage(55), Constraint::Min(0)]).areas(area);
            (a, Some(b))
        } else {
            let [a, b] =
                Layout::vertical([Constraint::Percentage(55), Constraint::Min(0)]).areas(area);
            (a, Some(b))
        };
        let block = Block::default().borders(Borders::ALL).title(title);
        let inner = block.inner(ladder_area);
        f.render_widget(block, ladder_area);
        if msgs.is_empty() {
            let what = if data.messages.loaded {
                "SIP messages kept for this call"
            } else {
                "messages"
            };
            f.render_widget(
                Paragraph::new(super::empty_line(
                    data.messages.loaded || data.messages.error.is_some(),
                    data.messages.error.as_deref(),
                    what,
                )),
                inner,
            );
            return;
        }
        let lines = self.ladder_lines(msgs, inner);
        f.render_widget(Paragraph::new(lines), inner);
        if let Some(r) = raw_area {
            let m = &msgs[self.selected];
            let sdp = m.sdp_addresses();
            let mut title = format!(" {} {} → {} ({}) ", m.label(), m.from, m.to, m.transport);
            if !sdp.is_empty() {
                title.push_str(&format!("SDP {} ", sdp.join(" ")));
            }
            let text: Vec<Line> = m.raw.lines().map(|l| Line::raw(l.to_owned())).collect();
            f.render_widget(
                Paragraph::new(text)
                    .wrap(Wrap { trim: false })
                    .block(Block::default().borders(Borders::ALL).title(title)),
                r,
            );
        }
    }

    fn ladder_lines(&mut self, msgs: &[Message], inner: Rect) -> Vec<Line<'static>> {
        const TIME: usize = 9;
        let w = (inner.width as usize).saturating_sub(TIME);
        let lanes = [w / 6, w / 2, w * 5 / 6];
        let caller = msgs.iter().find(|m| m.leg == "caller").map(|m| {
            if m.dir == "in" {
                m.from.clone()
            } else {
                m.to.clone()
            }
        });
        let vendor = msgs.iter().find(|m| m.leg == "vendor").map(|m| {
            if m.dir == "in" {
                m.from.clone()
            } else {
                m.to.clone()
            }
        });
        let mut head = vec![' '; w];
        put_centered(&mut head, lanes[0], "caller");
        put_centered(&mut head, lanes[1], "SBC");
        put_centered(&mut head, lanes[2], "vendor");
        let mut addrs = vec![' '; w];
        put_centered(&mut addrs, lanes[0], caller.as_deref().unwrap_or("?"));
        put_centered(&mut addrs, lanes[2], vendor.as_deref().unwrap_or("?"));
        let mut lines = vec![
            Line::styled(
                format!("{:TIME$}{}", "", head.iter().collect::<String>()),
                ui::strong(),
            ),
            Line::styled(
                format!("{:TIME$}{}", "", addrs.iter().collect::<String>()),
                ui::dim(),
            ),
        ];
        let visible = (inner.height as usize).saturating_sub(2) / 2;
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if visible > 0 && self.selected >= self.offset + visible {
            self.offset = self.selected + 1 - visible;
        }
        let t0 = msgs[0].at_ms;
        for (i, m) in msgs
            .iter()
            .enumerate()
            .skip(self.offset)
            .take(visible.max(1))
        {
            let (a, b) = match m.leg.as_str() {
                "vendor" => (lanes[1], lanes[2]),
                _ => (lanes[0], lanes[1]),
            };
            let rightward = (m.leg == "vendor") == (m.dir == "out");
            let mut label = lane_row(w, &lanes);
            let text = m.label();
            put_centered(&mut label, (a + b) / 2, &text);
            let mut arrow = lane_row(w, &lanes);
            for c in arrow.iter_mut().take(b).skip(a + 1) {
                *c = '─';
            }
            if b > a + 1 {
                if rightward {
                    arrow[b - 1] = '>';
                } else {
                    arrow[a + 1] = '<';
                }
            }
            let time = format!("+{:.3}", (m.at_ms.saturating_sub(t0)) as f64 / 1000.0);
            let style = if i == self.selected {
                ui::selected()
            } else {
                ui::strong()
            };
            let mark = if i == self.selected { '▶' } else { ' ' };
            lines.push(Line::from(vec![
                Span::raw(format!("{mark}{time:>7} ")),
                Span::styled(label.iter().collect::<String>(), style),
            ]));
            lines.push(Line::from(vec![
                Span::raw(format!("{:TIME$}", "")),
                Span::raw(arrow.iter().collect::<String>()),
            ]));
        }
        lines
    }
}

fn lane_row(w: usize, lanes: &[usize; 3]) -> Vec<char> {
    let mut v = vec![' '; w];
    for &l in lanes {
        if l < w {
            v[l] = '│';
        }
    }
    v
}

/// Writes `text` centred on column `at`, clipped to the row.
fn put_centered(row: &mut [char], at: usize, text: &str) {
    let n = text.chars().count();
    let start = at.saturating_sub(n / 2);
    for (i, c) in text.chars().enumerate() {
        if let Some(slot) = row.get_mut(start + i) {
            *slot = c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::model::CallMessages;

    #[test]
    fn moves_toggles_and_hangs_up() {
        let mut d = Data::default();
        d.messages.set(Some(CallMessages {
            id: 4,
            messages: vec![Message::default(), Message::default(), Message::default()],
            ..CallMessages::default()
        }));
        let mut l = Ladder::new(4);
        l.command(Command::Bottom, &d);
        assert_eq!(l.selected, 2);
        l.command(Command::Down, &d);
        assert_eq!(l.selected, 2);
        l.command(Command::Up, &d);
        assert_eq!(l.selected, 1);
        l.command(Command::Raw, &d);
        assert!(!l.raw);
        assert!(matches!(
            l.command(Command::Hangup, &d),
            Some(Action::Confirm {
                request: crate::console::action::Request::Hangup(4),
                ..
            })
        ));
        // Messages of another call are not this ladder's.
        assert!(Ladder::new(5).messages(&d).is_empty());
    }
}
