//! Drawing helpers shared by the screens: formats, the key bar, pop-ups. Emphasis is by
//! bold and reverse video first and colour second, so every screen reads in monochrome.

use ratatui::Frame;
use ratatui::layout::Rect;
pub use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

/// The style of a heading or a selected tab.
pub fn strong() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

/// The style of the selected row.
pub fn selected() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

/// The style of an error or a critical thing: bold, and red where there is colour.
pub fn bad() -> Style {
    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
}

/// The style of a warning.
pub fn warn() -> Style {
    Style::default().fg(Color::Yellow)
}

/// The style of something less important.
pub fn dim() -> Style {
    Style::default().add_modifier(Modifier::DIM)
}

/// `1h02m`, `3m05s`, `42s`.
pub fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if secs >= 86_400 {
        format!("{}d{:02}h", secs / 86_400, h % 24)
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `HH:MM:SS` (UTC) of a Unix ms.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix ms.
pub fn date_time(ms: u64) -> String {
    // Howard Hinnant's days-to-civil.
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {}", clock(ms))
}

/// A rate: `0`, `12.5`, `1.2k`, `3.4M`.
pub fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A rectangle of at most `w`×`h` in the middle of `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// The key bar: each key in reverse video followed by its word; a key the user's role
/// may not use (`false`) is dimmed and struck through instead.
pub fn key_bar(keys: &[(String, &str, bool)]) -> Line<'static> {
    let mut spans = Vec::new();
    for (k, w, allowed) in keys {
        if *allowed {
            spans.push(Span::styled(k.clone(), selected()));
            spans.push(Span::raw(format!(" {w}  ")));
        } else {
            let off = dim().add_modifier(Modifier::CROSSED_OUT);
            spans.push(Span::styled(k.clone(), off));
            spans.push(Span::styled(format!(" {w}"), off));
            spans.push(Span::raw("  "));
        }
    }
    Line::from(spans)
}

/// A framed message in the middle of `area` (a question, an error).
pub fn popup(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line<'static>>) {
    let width = lines
        .iter()
        .map(Line::width)
        .max()
        .unwrap_or(0)
        .max(title.len() + 2) as u16
        + 4;
    let r = centered(area, width, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" {title} ")),
        ),
        r,
    );
}

/// A one-line text field: `label value▏`, the value masked if `mask`.
pub fn field(label: &str, value: &str, mask: bool, focused: bool) -> Line<'static> {
    let shown = if mask {
        "•".repeat(value.chars().count())
    } else {
        value.to_owned()
    };
    let mut spans = vec![Span::styled(format!("{label:>10}: "), strong())];
    let style = if focused {
        selected()
    } else {
        Style::default()
    };
    spans.push(Span::styled(format!("{shown} "), style));
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(185), "3m05s");
        assert_eq!(duration(3720), "1h02m");
        assert_eq!(duration(90_000), "1d01h");
        assert_eq!(date_time(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(12.5), "12.5");
        assert_eq!(rate(25_000.0), "25.0k");
        assert_eq!(
            centered(Rect::new(0, 0, 10, 3), 40, 10),
            Rect::new(0, 0, 10, 3)
        );
    }
}
