//! `sbcctl`: runs one command line against the management API. Everything it touches from
//! the outside (environment, standard streams, the terminal) comes in as arguments, so tests
//! run it in-process against a fake server.
//!
//! This file parses the command line and hands each command to the module of its concern:
//! `session` (who is logged in, and where), `provisioning` (what carries calls and how
//! they are billed), `security` (who and what may reach the SBC), `operations` (what it is
//! doing now; `follow`: its event stream). `records`, `input` and `output` are what those share; `columns` and
//! `validation` are the tables they print and the checks made before any request.

mod columns;
mod follow;
mod input;
mod operations;
mod output;
mod provisioning;
mod records;
mod security;
mod session;
mod validation;

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use crate::api::{Error, exit};
use crate::cli::{Cdrs, Cli, Command, Global};
use crate::token::{self, Saved};

pub use input::{Prompt, Tty};
pub use validation::{check_amount, check_cidr};

/// What `sbcctl` reads from its environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `SBC_URL`
    pub url: Option<String>,
    /// `SBC_TOKEN`
    pub token: Option<String>,
    /// `SBC_CA`
    pub ca: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME/sbcctl` or `~/.config/sbcctl`
    pub config_dir: Option<PathBuf>,
}

impl Env {
    /// Reads the variables of this process.
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            url: var("SBC_URL"),
            token: var("SBC_TOKEN"),
            ca: var("SBC_CA").map(PathBuf::from),
            config_dir: token::config_dir(
                var("XDG_CONFIG_HOME").as_deref(),
                var("HOME").as_deref(),
            ),
        }
    }
}

/// The standard streams and the terminal.
pub struct Io<'a> {
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
    /// Standard input.
    pub stdin: &'a mut dyn BufRead,
    /// Asks for secrets without echo.
    pub prompt: &'a mut dyn Prompt,
}

/// The binary's `main`: the process's environment and streams; returns the exit code.
pub fn main() -> i32 {
    let env = Env::from_process();
    let stdin = io::stdin();
    let mut stdin = stdin.lock();
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let code = run(
        std::env::args_os(),
        &env,
        &mut Io {
            out: &mut out,
            err: &mut err,
            stdin: &mut stdin,
            prompt: &mut Tty,
        },
    );
    let _ = out.flush();
    code
}

/// Runs one command line; returns the exit code (see [`api::exit`](crate::api::exit)).
pub fn run<I, T>(args: I, env: &Env, io: &mut Io<'_>) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = io.out.write_all(text.as_bytes());
                    exit::OK
                }
                _ => {
                    let _ = io.err.write_all(text.as_bytes());
                    exit::USAGE
                }
            };
        }
    };
    let json = cli.global.json;
    match Ctx::dispatch(cli, env, io) {
        Ok(()) => exit::OK,
        Err(e) => {
            if json {
                let _ = writeln!(io.err, "{}", e.to_json());
            } else {
                let _ = writeln!(io.err, "sbcctl: {e}");
                if let Some(hint) = hint(&e) {
                    let _ = writeln!(io.err, "{hint}");
                }
            }
            e.exit_code()
        }
    }
}

fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::Api(a) => match a.code.as_str() {
            "token_invalid" | "token_expired" | "token_revoked" => {
                Some("log in again: sbcctl login")
            }
            "setup_only" => {
                Some("this session may only finish setup: sbcctl totp enrol, sbcctl password")
            }
            _ => None,
        },
        _ => None,
    }
}

/// One run of a command: its global flags, environment, streams and saved session. The
/// command modules each add the methods of their concern.
struct Ctx<'a, 'b> {
    g: Global,
    env: &'a Env,
    io: &'a mut Io<'b>,
    // An unreadable token file is only an error for the commands that need a session.
    saved: Result<Option<Saved>, Error>,
}

impl<'a, 'b> Ctx<'a, 'b> {
    fn dispatch(cli: Cli, env: &'a Env, io: &'a mut Io<'b>) -> Result<(), Error> {
        let saved = match &env.config_dir {
            Some(dir) => token::load(dir),
            None => Ok(None),
        };
        let mut cx = Ctx {
            g: cli.global,
            env,
            io,
            saved,
        };
        match cli.command {
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "sbcctl", cx.io.out);
                Ok(())
            }
            Command::Login(l) => cx.login(l),
            Command::Logout { all } => cx.logout(all),
            Command::Me => cx.me(),
            Command::Password { stdin } => cx.password(stdin),
            Command::Totp(t) => cx.totp(t),
            Command::Email {
                address,
                remove,
                codes,
                stdin,
            } => cx.email(address, remove, codes, stdin),
            Command::Accounts(a) => cx.accounts(a),
            Command::Rules(r) => cx.rules(r),
            Command::Tariffs(t) => cx.tariffs(t),
            Command::Connections(c) => cx.connections(c),
            Command::Firewall(f) => cx.firewall(f),
            Command::Bans(b) => cx.bans(b),
            Command::Calls(c) => cx.calls(c),
            Command::Cdrs(Cdrs::List(f)) => cx.cdrs(f),
            Command::Status => cx.status(),
            Command::Alerts => cx.alerts(),
            Command::Events { count } => cx.events(count),
            Command::Staff(s) => cx.staff(s),
            Command::Audit(a) => cx.audit(a),
        }
    }
}

/// The token file path for this environment (for messages and tests).
pub fn token_file(env: &Env) -> Option<PathBuf> {
    env.config_dir.as_deref().map(token::token_path)
}
