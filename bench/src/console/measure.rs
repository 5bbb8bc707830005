//! Opening each console screen against the daemon: the app and its HTTPS data source as
//! `sbc-tui` runs them, a [`Meter`] between the two that knows which requests are still
//! unanswered, and the frame drawn into ratatui's `TestBackend`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde::Serialize;
use tui::console::App;
use tui::console::action::{Action, Request, ScreenId, Update};
use tui::console::clock::SystemClock;
use tui::console::data::Data;
use tui::console::source::DataSource;
use tui::console::source::http::HttpSource;

/// The terminal sizes each screen is drawn at.
pub const SIZES: [(u16, u16); 2] = [(200, 60), (120, 40)];
/// A screen whose data is not there after this long fails the run.
const OPEN_DEADLINE: Duration = Duration::from_secs(60);

/// What is measured: the nine screens, and a call's SIP ladder (`Enter` on the calls screen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One of the tabs.
    Screen(ScreenId),
    /// The ladder of the first call listed.
    Ladder,
}

impl Target {
    /// Every target, in tab order, the ladder after the calls.
    pub fn all() -> Vec<Target> {
        let mut v = Vec::new();
        for s in ScreenId::ALL {
            v.push(Target::Screen(s));
            if s == ScreenId::Calls {
                v.push(Target::Ladder);
            }
        }
        v
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Target::Screen(s) => s.title(),
            Target::Ladder => "Ladder",
        }
    }
}

/// A [`DataSource`] that passes everything to the HTTPS source and keeps the requests sent
/// and not answered yet: "data ready" is when none is left and the app has applied them.
pub struct Meter<'a> {
    inner: &'a mut HttpSource,
    pending: Vec<Request>,
    /// Failed replies since the start (a screen that failed is not a measurement).
    pub failures: Vec<String>,
}

impl<'a> Meter<'a> {
    /// Wraps the source (logged in already).
    pub fn new(inner: &'a mut HttpSource) -> Meter<'a> {
        Meter {
            inner,
            pending: Vec::new(),
            failures: Vec::new(),
        }
    }
}

impl DataSource for Meter<'_> {
    fn send(&mut self, req: Request) {
        self.pending.push(req.clone());
        self.inner.send(req);
    }

    fn poll(&mut self) -> Vec<Update> {
        let ups = self.inner.poll();
        for u in &ups {
            if let Update::Reply(req, res) = u {
                if let Some(i) = self.pending.iter().position(|p| p == req) {
                    self.pending.remove(i);
                }
                if let Err(f) = res {
                    self.failures.push(format!("{req:?}: {}", f.message));
                }
            }
        }
        ups
    }
}

/// One opening of one target.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// From the key (or the console's start, for the dashboard) to the data applied, ms.
    pub fetch_ms: f64,
    /// Drawing the frame at each of [`SIZES`], ms.
    pub draw_ms: Vec<f64>,
    /// Rows the screen lists.
    pub rows: usize,
}

type BenchApp<'a> = App<Meter<'a>, SystemClock>;

/// Ticks the app until every request sent is answered and applied.
fn wait(app: &mut BenchApp<'_>, what: &str) -> anyhow::Result<()> {
    let end = Instant::now() + OPEN_DEADLINE;
    loop {
        app.tick();
        if app.source().pending.is_empty() {
            break;
        }
        if Instant::now() >= end {
            bail!(
                "{what}: no answer to {:?} within {OPEN_DEADLINE:?}",
                app.source().pending
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    if let Some(f) = app.source().failures.first() {
        bail!("{what}: a request failed: {f}");
    }
    Ok(())
}

/// Opens `target` in a fresh console (nothing loaded yet) and draws it.
///
/// - Dashboard: the console's start, which lands on it (`me`, `status`, `alerts`);
/// - another screen: the console is started and loaded first, then its number key's
///   action (the requests its component's `refresh` makes);
/// - the ladder: the calls screen is opened first, then `Enter` on its first row.
pub fn open(src: &mut HttpSource, url: &str, target: Target) -> anyhow::Result<Sample> {
    let name = target.name();
    // Stream events that came while no console was open would be applied inside the
    // measured time: a console that just started has none.
    let _ = src.poll();
    let mut t0 = Instant::now();
    let mut app = App::new(Meter::new(src), SystemClock, url, true, Some("admin"));
    match target {
        Target::Screen(ScreenId::Dashboard) => {}
        Target::Screen(s) => {
            wait(&mut app, "the console's start")?;
            t0 = Instant::now();
            app.act(Action::Show(s));
        }
        Target::Ladder => {
            wait(&mut app, "the console's start")?;
            app.act(Action::Show(ScreenId::Calls));
            wait(&mut app, "the calls screen")?;
            if app.data.calls.value.is_empty() {
                bail!("no call to open a ladder of");
            }
            t0 = Instant::now();
            app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        }
    }
    wait(&mut app, name)?;
    let fetch_ms = ms(t0.elapsed());
    let mut draw_ms = Vec::new();
    for (w, h) in SIZES {
        let mut term = Terminal::new(TestBackend::new(w, h)).context("TestBackend")?;
        let t = Instant::now();
        term.draw(|f| app.draw(f)).context("draw")?;
        draw_ms.push(ms(t.elapsed()));
    }
    Ok(Sample {
        fetch_ms,
        draw_ms,
        rows: rows(&app.data, target),
    })
}

/// The rows a target lists (the dashboard: its open alerts).
fn rows(d: &Data, target: Target) -> usize {
    match target {
        Target::Ladder => d.messages.value.as_ref().map_or(0, |m| m.messages.len()),
        Target::Screen(s) => match s {
            ScreenId::Dashboard | ScreenId::Alerts => d.alerts.value.len(),
            ScreenId::Calls => d.calls.value.len(),
            ScreenId::Bans => d.bans.value.len(),
            ScreenId::Firewall => d.firewall.value.as_ref().map_or(0, |f| {
                f.services.len() + f.deny.len() + f.allow_entries.len()
            }),
            ScreenId::Accounts => d.accounts.value.0.len() + d.accounts.value.1.len(),
            ScreenId::Cdrs => d.cdrs.value.len(),
            ScreenId::Audit => d.audit.value.len(),
            ScreenId::Staff => d.staff.value.len(),
        },
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Logs in through the source (its worker keeps the token for every later request).
pub fn login(src: &mut HttpSource, user: &str, password: &str, totp: &str) -> anyhow::Result<()> {
    src.send(Request::Login {
        username: user.into(),
        password: password.into(),
        totp: Some(totp.into()),
    });
    let end = Instant::now() + OPEN_DEADLINE;
    loop {
        for u in src.poll() {
            if let Update::Reply(Request::Login { .. }, r) = u {
                return match r {
                    Ok(_) => Ok(()),
                    Err(f) => bail!("login refused: {}", f.message),
                };
            }
        }
        if Instant::now() >= end {
            bail!("no answer to the login within {OPEN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The live calls the daemon lists now, asked through the source.
pub fn live_calls(src: &mut HttpSource) -> anyhow::Result<usize> {
    src.send(Request::Calls);
    let end = Instant::now() + OPEN_DEADLINE;
    loop {
        for u in src.poll() {
            if let Update::Reply(Request::Calls, r) = u {
                return match r {
                    Ok(tui::console::action::Reply::Calls(c)) => Ok(c.len()),
                    Ok(other) => bail!("unexpected reply to GET /api/calls: {other:?}"),
                    Err(f) => bail!("GET /api/calls: {}", f.message),
                };
            }
        }
        if Instant::now() >= end {
            bail!("no answer to GET /api/calls within {OPEN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Median and maximum.
pub fn median_max(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (med, s[n - 1])
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn median_and_max() {
        assert_eq!(median_max(&[3.0, 1.0, 2.0]), (2.0, 3.0));
        assert_eq!(median_max(&[4.0, 1.0, 2.0, 3.0]), (2.5, 4.0));
        assert_eq!(median_max(&[]), (0.0, 0.0));
    }

    #[test]
    fn targets_in_tab_order_with_the_ladder_after_calls() {
        let names: Vec<&str> = Target::all().iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "Dashboard",
                "Calls",
                "Ladder",
                "Bans",
                "Firewall",
                "Accounts",
                "CDRs",
                "Audit",
                "Alerts",
                "Staff"
            ]
        );
    }
}
