//! The dashboard: data-plane mode and coverage, calls against capacity, rate sparklines from
//! the `counters` stream, drops by reason, open alerts, and the CDR writer's health.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline};

use super::Screen;
use crate::console::action::{Action, Request};
use crate::console::data::Data;
use crate::console::keymap::{Command, Scope};
use crate::console::model::Counters;
use crate::console::ui;

/// The dashboard has no view state of its own.
#[derive(Debug, Default)]
pub struct Dashboard;

type Metric = (&'static str, fn(&Counters) -> f64);

const RATES: [Metric; 4] = [
    ("INVITE/s", |c| c.invites_per_sec),
    ("SIP pkt/s", |c| c.sip_packets_per_sec),
    ("relay XDP pkt/s", |c| c.relayed_kernel_pps),
    ("relay user pkt/s", |c| c.relayed_user_pps),
];

fn plane_lines(data: &Data) -> Vec<Line<'static>> {
    let Some(s) = data.status.value.as_ref() else {
        return vec![super::empty_line(
            data.status.loaded,
            data.status.error.as_deref(),
            "status",
        )];
    };
    let mut lines = vec![Line::from(vec![
        Span::styled("mode ", ui::strong()),
        Span::styled(s.dataplane.clone(), ui::selected()),
        Span::raw(format!("  {}", s.dataplane_reason)),
    ])];
    let cover: Vec<Span<'static>> = s
        .coverage
        .iter()
        .flat_map(|c| {
            let style = if c.plane == "none" {
                ui::bad()
            } else {
                ui::strong()
            };
            let mut v = vec![
                Span::raw(format!("{} {} ", c.service, c.address)),
                Span::styled(c.plane.clone(), style),
            ];
            if !c.uncovered.is_empty() {
                v.push(Span::styled(
                    format!(" (not on {})", c.uncovered.join(",")),
                    ui::warn(),
                ));
            }
            v.push(Span::raw("  "));
            v
        })
        .collect();
    if !cover.is_empty() {
        let mut spans = vec![Span::styled("covers ", ui::strong())];
        spans.extend(cover);
        lines.push(Line::from(spans));
    }
    lines
}

fn calls_line(data: &Data) -> Line<'static> {
    let (active, cap) = match (data.last_counters(), data.status.value.as_ref()) {
        (Some(c), _) => (c.calls_active, Some(c.calls_capacity)),
        (None, Some(s)) => (s.active_calls, None),
        (None, None) => (0, None),
    };
    let mut spans = vec![Span::styled("calls ", ui::strong())];
    match cap.filter(|c| *c > 0) {
        Some(cap) => {
            let pct = active.saturating_mul(100) / cap;
            let cells = 20u64;
            let full = (active.min(cap) * cells / cap) as usize;
            let style = if pct >= 90 { ui::bad() } else { ui::strong() };
            spans.push(Span::styled(format!("{active}/{cap} "), style));
            spans.push(Span::raw(format!(
                "[{}{}] {pct}%",
                "#".repeat(full),
                ".".repeat(cells as usize - full)
            )));
        }
        None => spans.push(Span::raw(format!("{active} (capacity unknown)"))),
    }
    Line::from(spans)
}

fn draw_rates(f: &mut Frame, area: Rect, data: &Data) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" Rates (last minutes) ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let rows = Layout::vertical(
        std::iter::once(Constraint::Length(1)).chain(RATES.iter().map(|_| Constraint::Length(1))),
    )
    .split(inner);
    f.render_widget(Paragraph::new(calls_line(data)), rows[0]);
    for (i, (name, get)) in RATES.iter().enumerate() {
        let r = rows[i + 1];
        let now = data.last_counters().map_or(0.0, get);
        let cols = Layout::horizontal([
            Constraint::Length(17),
            Constraint::Length(8),
            Constraint::Min(0),
        ])
        .split(r);
        f.render_widget(Paragraph::new(Span::styled(*name, ui::strong())), cols[0]);
        f.render_widget(Paragraph::new(format!("{:>7}", ui::rate(now))), cols[1]);
        let width = cols[2].width as usize;
        let skip = data.counters.len().saturating_sub(width);
        let points: Vec<u64> = data
            .counters
            .iter()
            .skip(skip)
            .map(|c| get(c).max(0.0).round() as u64)
            .collect();
        f.render_widget(Sparkline::default().data(&points), cols[2]);
    }
}

fn drops_lines(data: &Data) -> Vec<Line<'static>> {
    let Some(c) = data.last_counters() else {
        return vec![Line::from(Span::styled("no counters yet", ui::dim()))];
    };
    let mut drops: Vec<(&String, &f64)> = c.drops_per_sec.iter().collect();
    drops.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    if drops.is_empty() {
        return vec![Line::from(Span::styled("no drops", ui::dim()))];
    }
    drops
        .into_iter()
        .map(|(k, v)| {
            let style = if *v > 0.0 { ui::strong() } else { ui::dim() };
            Line::from(vec![
                Span::raw(format!("{k:<16}")),
                Span::styled(format!("{:>8}/s", ui::rate(*v)), style),
            ])
        })
        .collect()
}

fn alert_lines(data: &Data) -> Vec<Line<'static>> {
    let mut open: Vec<_> = data
        .alerts
        .value
        .iter()
        .filter(|a| a.acked_by.is_none())
        .collect();
    open.sort_by_key(|a| {
        (
            a.severity != "critical",
            a.severity != "warning",
            a.code.clone(),
        )
    });
    if open.is_empty() {
        return vec![super::empty_line(
            data.alerts.loaded,
            data.alerts.error.as_deref(),
            "open alerts",
        )];
    }
    open.into_iter()
        .map(|a| {
            let style = if a.severity == "critical" {
                ui::bad()
            } else {
                ui::warn()
            };
            Line::from(vec![
                Span::styled(format!("{:<8} ", a.severity.to_uppercase()), style),
                Span::raw(a.message.clone()),
            ])
        })
        .collect()
}

fn cdr_line(data: &Data) -> Line<'static> {
    let Some(s) = data.status.value.as_ref() else {
        return Line::from(Span::styled("CDR writer: unknown", ui::dim()));
    };
    let q = s.cdr_queue;
    let full = q.capacity > 0 && q.depth * 10 >= q.capacity * 8;
    let health = if q.dropped > 0 || full {
        Span::styled("DEGRADED", ui::bad())
    } else {
        Span::styled("ok", ui::strong())
    };
    Line::from(vec![
        Span::styled("CDR writer ", ui::strong()),
        health,
        Span::raw(format!(
            "  queue {}/{}  written {}  waited {}  dropped {}",
            q.depth, q.capacity, q.written, q.blocked, q.dropped
        )),
    ])
}

impl Screen for Dashboard {
    fn scopes(&self) -> Vec<Scope> {
        Vec::new()
    }

    fn command(&mut self, _cmd: Command, _data: &Data) -> Option<Action> {
        None
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, _now_ms: u64) {
        let plane = plane_lines(data);
        let [top, mid, bottom] = Layout::vertical([
            Constraint::Length(plane.len() as u16 + 2),
            Constraint::Length(RATES.len() as u16 + 3),
            Constraint::Min(0),
        ])
        .areas(area);
        f.render_widget(
            Paragraph::new(plane)
                .block(Block::default().borders(Borders::ALL).title(" Data plane ")),
            top,
        );
        draw_rates(f, mid, data);
        let [left, right] =
            Layout::horizontal([Constraint::Length(30), Constraint::Min(0)]).areas(bottom);
        f.render_widget(
            Paragraph::new(drops_lines(data)).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" Drops by reason "),
            ),
            left,
        );
        let mut lines = vec![cdr_line(data)];
        lines.extend(alert_lines(data));
        f.render_widget(
            Paragraph::new(lines)
                .wrap(ratatui::widgets::Wrap { trim: true })
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" Health and alerts "),
                ),
            right,
        );
    }

    fn refresh(&self, _data: &Data) -> Vec<Request> {
        vec![Request::Status, Request::Alerts]
    }
}
