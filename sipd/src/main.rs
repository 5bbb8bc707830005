//! `sipd`: the command line of the SIP edge. `run` starts the appliance (see
//! [`sipd::server`]); the other subcommands check the configuration, create the first admin
//! (`init`), provision and back up the store (`import`, `export`), list accounts, list and
//! export CDRs, verify the audit log's hash chain, and remove this instance's XDP programs and
//! pinned maps (`cleanup`), check and repair the store (`store check`), back it up and
//! restore it (`backup`, `restore`). Store commands open the store directly, so they cannot
//! run while `run` holds it; `backup` then asks the running sipd over its admin socket.
//! Arguments are parsed here; the work is done by the library (`sipd`).

mod lists;
mod store_cmd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use sipd::config::{Config, ConfigError, DEFAULT_FILE, Origin};
use sipd::provision::{self, ProvisionError};
use sipd::store::{Account, Store, StoreError};
use sipd_core::auth::digest::Credential;

#[derive(Parser)]
#[command(
    name = "sipd",
    version,
    about = "SIP edge of the XDP SBC: authentication, admission, routing, media anchoring",
    long_about = "SIP edge of the XDP SBC: authentication, admission, routing, media anchoring.\n\n\
        Configuration comes from sbc.toml (see --config); every setting has a default, so no \
        file is needed. Accounts, auth rules, tariffs and upstream connections live in the \
        store under the data directory and are provisioned with `sipd import`.\n\n\
        Store commands open the store directly and so cannot run while the SIP service holds it, \
        except `sipd backup`, which asks the running sipd over its admin socket.",
    arg_required_else_help = true
)]
struct Cli {
    /// Configuration file [default: ./sbc.toml if present, else built-in defaults]
    #[arg(short, long, global = true, env = "SIPD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Validate the configuration and exit, like the check-config subcommand
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file: syntax, unknown keys, ranges, addresses, CIDRs.
    /// Reports FILE:LINE:COLUMN for each problem; exit status 0 if valid, 1 if not.
    CheckConfig(CheckConfig),
    /// Import a provisioning file (accounts with their rules, tariffs, connections).
    /// Upserts by name; validates the whole file first and writes nothing if anything is
    /// wrong. An account's balance is applied only when the account is created.
    Import {
        /// Provisioning file (TOML); `sipd export` writes the same format
        file: PathBuf,
        /// Validate against the store without writing
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the store's accounts, rules, tariffs and connections as a provisioning file
    /// (a backup; it contains SIP passwords/HA1s, so a file is created mode 0600).
    Export {
        /// Output file [default: standard output]
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Create the first admin of the management API (refused once any staff user exists)
    /// and print the TOTP enrolment: an otpauth:// URI and a QR code for an authenticator
    /// app. The first login with a code from the app confirms it. Creates the password
    /// pepper file ([management] pepper_file) if needed.
    Init {
        /// The admin's username
        #[arg(long)]
        username: String,
        /// Read the password from this file (first line; `-` = standard input) instead of
        /// asking on the terminal
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Account commands.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Call detail records.
    #[command(subcommand)]
    Cdrs(CdrsCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Refusals before authentication, counted per source and reason (the refusal table).
    #[command(subcommand)]
    Refusals(RefusalsCommand),
    /// The store as a whole.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Take a consistent copy of the whole store into DIR (new or empty; made 0700): a new
    /// store in DIR/store and DIR/manifest.json (time, schema, entries per tree). Works
    /// while `sipd run` serves (it asks it over the admin socket in the data directory, and
    /// the copy is one point in time: writes wait for it) and with sipd stopped. Audited.
    Backup {
        /// Where the copy goes (new or empty directory)
        dir: PathBuf,
        /// Machine-readable output: the manifest as JSON
        #[arg(long)]
        json: bool,
    },
    /// Replace the store with the backup in DIR. sipd must be stopped. The backup is
    /// verified first (every record decodes, the counts match its manifest); the current
    /// store is moved aside to store.before-restore-<unix seconds> (never deleted). Audited
    /// in the restored store.
    Restore {
        /// A directory written by `sipd backup`
        dir: PathBuf,
        /// Machine-readable output: what was done, as JSON
        #[arg(long)]
        json: bool,
    },
    /// Run the appliance: bring up the data plane (XDP where it attaches, else userspace,
    /// said loudly), the media relay and SIP on the configured addresses, and take back the
    /// calls a previous run left up (after a SIGUSR2 hand-over or a crash). Until SIGTERM or
    /// SIGINT (calls in progress are then ended with BYE and their CDRs written), or SIGUSR2
    /// (an upgrade: new calls refused, calls in setup given 5 s, answered calls left up for
    /// the next start to adopt). Logs go to standard error (RUST_LOG, default info); "sipd
    /// ready" is logged once SIP is listening.
    Run,
    /// Detach this instance's XDP programs and remove its pinned maps. sipd leaves them in
    /// place when it stops, so the kernel firewall (bans, deny list, SIP guard) keeps
    /// protecting the host across a restart; this removes them for good, e.g. to free the
    /// interface for another instance.
    Cleanup,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// With sipd stopped, walk every tree and record: records that do not decode, keys that
    /// are not what their tree keys by (CDR ids), name indexes pointing nowhere or at the
    /// wrong record, records missing from their index, id counters behind the records, the
    /// schema and the audit chain. Exit status 0 clean (or all repaired), 1 problems left,
    /// 2 could not run (e.g. sipd is running).
    Check {
        /// Fix what can be fixed without losing anything: undecodable records move to the
        /// `quarantine` tree with their tree and key, indexes are rebuilt from their
        /// records, counters raised; what cannot be fixed is said
        #[arg(long)]
        repair: bool,
        /// Machine-readable output: a JSON object
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CdrsCommand {
    /// List CDRs, oldest first (one per call attempt).
    List {
        /// Machine-readable output: a JSON array
        #[arg(long)]
        json: bool,
        /// Only CDRs with an id above this (resume after the last one seen)
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
    /// Write every CDR as JSON Lines, oldest first (to keep them beyond `[retention] days`,
    /// after which `sipd run` purges them)
    Export {
        /// Output file (written 0600, complete or not at all); default stdout
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Only CDRs with an id above this (an incremental export)
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

#[derive(Subcommand)]
enum RefusalsCommand {
    /// List the refusal table as `sipd run` last saved it (it saves every few seconds and at
    /// shutdown): per source and reason, the count, the last status and when the first and
    /// the last were (Unix ms), most recent first.
    List {
        /// Machine-readable output: a JSON array
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List audit entries, oldest first: logins, changes, role denials, imports and the
    /// IDS's bans (actor `sipd:ids`, with the evidence in `after`).
    List {
        /// Machine-readable output: a JSON array
        #[arg(long)]
        json: bool,
        /// Only entries with an id above this (resume after the last one seen)
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many (0: all)
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
    /// Check the audit log's hash chain: every entry must carry the hash of the one before
    /// and the last must match the recorded head. Names the first broken entry; exit status
    /// 0 when the chain holds, 1 when it does not.
    Verify {
        /// Machine-readable output: a JSON object
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct CheckConfig {
    /// File to check [default: --config, else ./sbc.toml]
    file: Option<PathBuf>,
    /// Print the effective configuration (defaults filled in) as TOML when valid
    #[arg(long)]
    print: bool,
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// List accounts (secrets are never shown).
    List {
        /// Machine-readable output: a JSON array
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon says what it is doing; one-shot commands only speak up when something is off.
    let default_level = if matches!(cli.command, Some(Command::Run)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    // From here a panic on any thread or task ends the process (status 70) with one log line,
    // never leaving a half-working daemon behind.
    sipd::panic::install();
    let result = match (cli.check_config, cli.command) {
        (Some(file), _) => check_config(file.or(cli.config), false),
        (None, Some(Command::CheckConfig(c))) => check_config(c.file.or(cli.config), c.print),
        (None, Some(cmd)) => run(cmd, cli.config.as_deref()),
        (None, None) => Ok(ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sipd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: Option<PathBuf>, print: bool) -> Result<ExitCode> {
    let file = match file {
        Some(f) => f,
        None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
        None => {
            println!("no {DEFAULT_FILE} here: the built-in defaults apply, and they are valid");
            explain(&Config::default());
            if print {
                print!("{}", toml::to_string_pretty(&Config::default())?);
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match Config::load(Some(&file)) {
        Ok((cfg, _)) => {
            println!("{}: OK", file.display());
            explain(&cfg);
            if print {
                print!("{}", toml::to_string_pretty(&cfg)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (ConfigError::Parse { .. } | ConfigError::Invalid { .. })) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// What the valid configuration means where it is easy to get wrong (digest interop).
fn explain(cfg: &Config) {
    for line in cfg.digest_interop() {
        println!("note: {line}");
    }
}

fn run(cmd: Command, config: Option<&Path>) -> Result<ExitCode> {
    let (cfg, origin) = Config::load(config)?;
    if let Origin::File(f) = &origin {
        tracing::debug!(file = %f.display(), "configuration loaded");
    }
    if matches!(cmd, Command::Cleanup) {
        let d = &cfg.dataplane;
        let c = relay_user::loader::detach(&d.instance, &d.interfaces)
            .with_context(|| format!("cleaning up instance {}", d.instance))?;
        if c.dir_removed {
            println!(
                "instance {}: detached {} XDP link(s), removed {} map pin(s)",
                d.instance,
                c.links.len(),
                c.maps.len()
            );
        } else {
            println!("instance {}: nothing pinned", d.instance);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if matches!(cmd, Command::Run) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        rt.block_on(sipd::server::run(cfg))?;
        return Ok(ExitCode::SUCCESS);
    }
    let cmd = match cmd {
        Command::Store(StoreCommand::Check { repair, json }) => {
            return store_cmd::check(&cfg, repair, json);
        }
        Command::Backup { dir, json } => return store_cmd::backup(&cfg, &dir, json),
        Command::Restore { dir, json } => return store_cmd::restore(&cfg, &dir, json),
        other => other,
    };
    let dir = cfg.store_dir();
    let store = Store::open_private(&cfg.data_dir, &cfg.auth.realm)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    match cmd {
        // Dispatched in main before anything is opened; kept total rather than panicking.
        Command::CheckConfig(c) => check_config(c.file.or(config.map(Path::to_path_buf)), c.print),
        Command::Import { file, dry_run } => import(&store, &file, &cfg, dry_run),
        Command::Export { output } => export(&store, output.as_deref()),
        Command::Init {
            username,
            password_file,
        } => init(&cfg, &store, &username, password_file.as_deref()),
        Command::Accounts(AccountsCommand::List { json }) => list_accounts(&store, json),
        Command::Cdrs(CdrsCommand::List { json, after, limit }) => {
            list_cdrs(&store, json, after, limit)
        }
        Command::Cdrs(CdrsCommand::Export { output, after }) => {
            export_cdrs(&store, output.as_deref(), after)
        }
        Command::Audit(AuditCommand::Verify { json }) => verify_audit(&store, json),
        Command::Audit(AuditCommand::List { json, after, limit }) => {
            lists::audit(&store, json, after, limit)
        }
        Command::Refusals(RefusalsCommand::List { json }) => lists::refusals(&store, json),
        Command::Run
        | Command::Cleanup
        | Command::Store(_)
        | Command::Backup { .. }
        | Command::Restore { .. } => unreachable!("handled above"),
    }
}

fn verify_audit(store: &Store, json: bool) -> Result<ExitCode> {
    let v = store.verify_audit()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let range = match (v.first_id, v.last_id) {
            (Some(a), Some(b)) => format!("#{a}..=#{b}"),
            _ => "no entries".into(),
        };
        let purged = v
            .purged_through
            .map_or(String::new(), |p| format!(", purged through #{p}"));
        match &v.broken {
            None => println!(
                "audit log: chain intact ({} entries, {range}{purged})",
                v.checked
            ),
            Some(b) => eprintln!(
                "audit log: chain BROKEN at entry #{} ({}): {} ({} entries verified before it)",
                b.id,
                serde_json::to_value(b.problem)?.as_str().unwrap_or("?"),
                b.detail,
                v.checked
            ),
        }
    }
    Ok(if v.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn import(store: &Store, file: &Path, cfg: &Config, dry_run: bool) -> Result<ExitCode> {
    match provision::import(file, store, &cfg.sip_secrets(), cfg, dry_run) {
        Ok(Some(summary)) => {
            println!("{}: imported ({summary})", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            println!("{}: valid (dry run, nothing written)", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(ProvisionError::Invalid(problems)) => {
            // One problem a line, FILE:LINE:COL first, as compilers do, so editors can jump.
            for p in problems {
                let mut line = file.display().to_string();
                if let Some(at) = p.at {
                    line.push_str(&format!(":{at}"));
                }
                if !p.path.is_empty() {
                    line.push_str(&format!(": {}", p.path));
                }
                eprintln!("{line}: {}", p.message);
            }
            eprintln!("{}: nothing imported", file.display());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

fn init(cfg: &Config, store: &Store, username: &str, pw_file: Option<&Path>) -> Result<ExitCode> {
    if store.has_staff()? {
        eprintln!("sipd: staff users already exist; init only creates the first admin");
        return Ok(ExitCode::FAILURE);
    }
    let password = match pw_file {
        Some(p) if p == Path::new("-") => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line
        }
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => {
            let first = sipd::mgmt::tty::prompt_password("Password for the new admin: ")?;
            let again = sipd::mgmt::tty::prompt_password("Again: ")?;
            if first != again {
                eprintln!("sipd: the passwords differ");
                return Ok(ExitCode::FAILURE);
            }
            first
        }
    };
    let password = password.lines().next().unwrap_or_default();
    let auth = sipd::mgmt::StaffAuth::from_config(cfg, store.has_staff()?)?;
    let now = std::time::SystemTime::now();
    match auth.init_first_admin(store, username, password, now) {
        Ok((e, strength)) => {
            println!(
                "admin {username} created (password strength {}/4)",
                strength.score
            );
            println!();
            println!("Enrol TOTP now: scan this QR code with an authenticator app,");
            println!("or enter the secret {} by hand.", e.secret);
            println!();
            println!("{}", e.qr);
            println!();
            println!("{}", e.uri);
            println!();
            println!(
                "The first login with a code from the app confirms the enrolment; until \
                 then this admin may only enrol TOTP."
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(sipd::mgmt::StaffError::Policy(v)) => {
            eprintln!("sipd: password refused:");
            for p in &v.problems {
                eprintln!("  - it {p}");
            }
            for s in &v.strength.suggestions {
                eprintln!("  hint: {s}");
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

fn export(store: &Store, output: Option<&Path>) -> Result<ExitCode> {
    let text = provision::export(store)?.to_toml()?;
    let Some(path) = output else {
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    };
    // Written beside the target and renamed, so an interrupted export never leaves a
    // truncated backup under the real name.
    sipd::private_file::write(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("exported to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn export_cdrs(store: &Store, output: Option<&Path>, mut after: u64) -> Result<ExitCode> {
    let mut text = Vec::new();
    let (mut n, mut bad) = (0usize, 0usize);
    loop {
        const PAGE: usize = 10_000;
        let page = store.cdrs(after, PAGE);
        // A page that is not full is the last; one ending in an unreadable record cannot be
        // resumed after it.
        let more = page.len() == PAGE && matches!(page.last(), Some(Ok(_)));
        for c in page {
            match c {
                Ok(c) => {
                    after = c.id;
                    serde_json::to_writer(&mut text, &c)?;
                    text.push(b'\n');
                    n += 1;
                }
                Err(e) => {
                    bad += 1;
                    tracing::warn!(error = %e, "unreadable CDR skipped");
                }
            }
        }
        if !more {
            break;
        }
    }
    match output {
        None => std::io::stdout().write_all(&text)?,
        Some(path) => {
            sipd::private_file::write(path, &text)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{n} CDRs exported to {}", path.display());
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What `accounts list --json` shows: everything but the secret itself.
#[derive(Serialize)]
struct AccountRow {
    id: u64,
    name: String,
    enabled: bool,
    sip_username: Option<String>,
    /// "password", "ha1", or null for IP-only accounts.
    credential: Option<&'static str>,
    balance: String,
    tariff: Option<String>,
    cps_limit: Option<u32>,
    max_sessions: Option<u32>,
    max_call_secs: Option<u32>,
    rules: usize,
}

fn row(store: &Store, a: Account) -> AccountRow {
    let tariff = a.tariff_id.map(|id| match store.tariff(id) {
        Ok(Some(t)) => t.name,
        _ => format!("#{id}"),
    });
    AccountRow {
        rules: store.rules_of(a.id).len(),
        id: a.id,
        name: a.name,
        enabled: a.enabled,
        credential: a.sip.as_ref().map(|s| match s.credential {
            Credential::Password { .. } => "password",
            Credential::Ha1 { .. } => "ha1",
        }),
        sip_username: a.sip.map(|s| s.username),
        balance: a.balance.to_string(),
        tariff,
        cps_limit: a.cps_limit,
        max_sessions: a.max_sessions,
        max_call_secs: a.max_call_secs,
    }
}

fn list_accounts(store: &Store, json: bool) -> Result<ExitCode> {
    let mut rows = Vec::new();
    let mut broken: Vec<StoreError> = Vec::new();
    for r in store.accounts() {
        match r {
            Ok(a) => rows.push(row(store, a)),
            Err(e) => broken.push(e),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let opt = |v: Option<u32>| v.map_or("-".to_owned(), |v| v.to_string());
        let table: Vec<[String; 10]> = rows
            .iter()
            .map(|r| {
                [
                    r.id.to_string(),
                    r.name.clone(),
                    if r.enabled { "yes" } else { "no" }.into(),
                    r.sip_username.clone().unwrap_or_else(|| "-".into()),
                    r.credential.unwrap_or("ip-only").into(),
                    r.balance.clone(),
                    r.tariff.clone().unwrap_or_else(|| "-".into()),
                    format!("{}/{}", opt(r.cps_limit), opt(r.max_sessions)),
                    opt(r.max_call_secs),
                    r.rules.to_string(),
                ]
            })
            .collect();
        let header = [
            "ID", "NAME", "ENABLED", "SIP USER", "AUTH", "BALANCE", "TARIFF", "CPS/SESS",
            "MAX SECS", "RULES",
        ];
        let mut widths = header.map(|h| h.chars().count());
        for r in &table {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("{}", parts.join("  ").trim_end());
        };
        line(&header.map(String::from));
        for r in &table {
            line(r);
        }
        if table.is_empty() {
            println!("(no accounts; provision some with `sipd import FILE`)");
        }
    }
    for e in &broken {
        eprintln!("sipd: {e}");
    }
    Ok(if broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn list_cdrs(store: &Store, json: bool, after: u64, limit: usize) -> Result<ExitCode> {
    let mut cdrs = Vec::new();
    let mut bad = 0usize;
    for c in store.cdrs(after, limit) {
        match c {
            Ok(c) => cdrs.push(c),
            Err(e) => {
                bad += 1;
                tracing::warn!(error = %e, "unreadable CDR skipped");
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &cdrs)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:>6}  {:<24}  {:<14} {:<14} {:>4}  {:>6}  {:>10}  reason",
            "id", "call-id", "caller", "callee", "code", "secs", "cost"
        )?;
        for c in &cdrs {
            let d = &c.call;
            writeln!(
                out,
                "{:>6}  {:<24}  {:<14} {:<14} {:>4}  {:>6}  {:>10}  {}",
                c.id,
                d.call_id.chars().take(24).collect::<String>(),
                d.caller,
                d.callee,
                d.result_code,
                d.duration_secs,
                d.cost.to_string(),
                d.reason
            )?;
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
