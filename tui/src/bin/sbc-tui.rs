//! `sbc-tui`: the operator console for the SBC's management API.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use crossterm::event::{self, Event, KeyEventKind};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tui::api::{Options, check_url};
use tui::console::App;
use tui::console::clock::SystemClock;
use tui::console::source::http::HttpSource;
use tui::ctl::Env;
use tui::token;

/// Operator console for the SBC: dashboard, live calls with their SIP ladders, bans, audit,
/// alerts. Shares `sbcctl`'s saved session ($XDG_CONFIG_HOME/sbcctl/token).
#[derive(Debug, Parser)]
#[command(name = "sbc-tui", version)]
struct Args {
    /// Management API URL [env: SBC_URL] [default: the saved session's]
    #[arg(long)]
    url: Option<String>,
    /// Trust the certificate(s) in this PEM file (sipd's <data_dir>/mgmt-tls.crt) [env: SBC_CA]
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Accept any certificate (a self-signed one)
    #[arg(long, short = 'k')]
    insecure: bool,
    /// Allow http:// (tests only)
    #[arg(long, hide = true)]
    allow_http: bool,
    /// Request timeout in seconds
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

fn main() {
    let args = Args::parse();
    let env = Env::from_process();
    let saved = env
        .config_dir
        .as_deref()
        .map(token::load)
        .transpose()
        .unwrap_or_else(|e| {
            eprintln!("sbc-tui: {e}");
            None
        })
        .flatten();
    let Some(url) = args
        .url
        .clone()
        .or(env.url.clone())
        .or_else(|| saved.as_ref().map(|s| s.url.clone()))
    else {
        eprintln!("sbc-tui: no URL: pass --url https://HOST:PORT (or log in with sbcctl first)");
        std::process::exit(1);
    };
    let url = match check_url(&url, args.allow_http) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("sbc-tui: {e}");
            std::process::exit(1);
        }
    };
    // The saved session is used only for the URL it was made for.
    let same = saved
        .as_ref()
        .filter(|s| s.url.trim_end_matches('/') == url);
    let token = env.token.clone().or_else(|| same.map(|s| s.token.clone()));
    let opts = Options {
        url: url.clone(),
        insecure: args.insecure || same.is_some_and(|s| s.insecure),
        ca: args
            .ca
            .or(env.ca.clone())
            .or_else(|| same.and_then(|s| s.ca.clone())),
        allow_http: args.allow_http,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let username = same.and_then(|s| s.username.clone());
    let source = HttpSource::start(opts, token.clone(), env.config_dir.clone());
    let app = App::new(
        source,
        SystemClock,
        &url,
        token.is_some(),
        username.as_deref(),
    );
    if let Err(e) = run(app) {
        eprintln!("sbc-tui: {e}");
        std::process::exit(4);
    }
}

fn run(mut app: App<HttpSource, SystemClock>) -> io::Result<()> {
    enable_raw_mode()?;
    execute!(io::stdout(), EnterAlternateScreen)?;
    // Leave the terminal usable even if something panics.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |p| {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen);
        hook(p);
    }));
    let mut term = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    let r = (|| -> io::Result<()> {
        while !app.should_quit() {
            app.tick();
            term.draw(|f| app.draw(f))?;
            // Short polls keep the view live without spinning; keys are handled at once.
            if event::poll(Duration::from_millis(200))? {
                match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => app.handle_key(k),
                    _ => {}
                }
            }
        }
        Ok(())
    })();
    disable_raw_mode()?;
    execute!(io::stdout(), LeaveAlternateScreen)?;
    r
}
