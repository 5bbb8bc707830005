//! `sbcctl`'s command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_URL: &str = "https://127.0.0.1:8443";

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  usage or validation error (bad arguments; the API said 400 or 409)
  2  authentication or authorisation (not logged in; 401, 403)
  3  not found (404)
  4  server or connection failure (5xx, TLS, cannot connect, bad reply)
  5  locked out after failed logins (429; see Retry-After)

Environment:
  SBC_URL    management API base URL (overrides the saved session's URL)
  SBC_TOKEN  session token (overrides the saved session)
  SBC_CA     like --ca
  XDG_CONFIG_HOME  the session is saved in $XDG_CONFIG_HOME/sbcctl/token
                   (else ~/.config/sbcctl/token), mode 0600

sipd's self-signed certificate is <data_dir>/mgmt-tls.crt (data_dir in sbc.toml, default
./data): pass it with --ca (remembered by login), or use --insecure.";

#[derive(Debug, Parser)]
#[command(
    name = "sbcctl",
    version,
    about = "Scripting CLI for the SBC's HTTPS management API",
    long_about = "Scripting CLI for the SBC's HTTPS management API: every operation of the API as \
        a subcommand, tables for people, --json for scripts.\n\n\
        Log in once with `sbcctl login`; the session is saved for later commands.",
    after_help = AFTER_HELP,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Management API URL [env: SBC_URL] [default: the saved session's, else
    /// https://127.0.0.1:8443]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Accept any server certificate (sipd's self-signed one); prefer --ca
    #[arg(short = 'k', long, global = true)]
    pub insecure: bool,
    /// Trust the certificate(s) in this PEM file instead of the public roots [env: SBC_CA]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Print the API's JSON (pretty) on standard output; errors as one JSON object on stderr
    #[arg(long, global = true)]
    pub json: bool,
    /// Request timeout in seconds
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Allow an http:// URL (tests only)
    #[arg(long, global = true, hide = true)]
    pub allow_http: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and save the session token (prompts for what is not given)
    Login(Login),
    /// End this session (--all: every session of this user)
    Logout {
        /// Revoke every session of this user, everywhere
        #[arg(long)]
        all: bool,
    },
    /// Who this session belongs to
    Me,
    /// Change your own password (prompts; --stdin reads current and new, one per line)
    Password {
        /// Read the current and the new password from standard input, one per line
        #[arg(long)]
        stdin: bool,
    },
    /// Your TOTP second factor
    #[command(subcommand)]
    Totp(Totp),
    /// Your email address and email codes as second factor (asks your password; --stdin
    /// reads it from standard input)
    Email {
        /// The new address (absent: unchanged)
        address: Option<String>,
        /// Remove your address (and turn email codes off)
        #[arg(long, conflicts_with = "address")]
        remove: bool,
        /// Use emailed codes as your second factor at login (when your role may)
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        codes: Option<bool>,
        /// Read your password from standard input
        #[arg(long)]
        stdin: bool,
    },
    /// Customer accounts (the carriers that send calls)
    #[command(subcommand)]
    Accounts(Accounts),
    /// Authentication rules of an account (source CIDR, CLI and CLD patterns)
    #[command(subcommand)]
    Rules(Rules),
    /// Tariffs (rate per minute and billing increments)
    #[command(subcommand)]
    Tariffs(Tariffs),
    /// Upstream connections (vendors calls are routed to)
    #[command(subcommand)]
    Connections(Connections),
    /// Per-service IP firewall: allow lists and static deny CIDRs
    #[command(subcommand)]
    Firewall(Firewall),
    /// Banned prefixes (IDS and staff)
    #[command(subcommand)]
    Bans(Bans),
    /// Calls in progress
    #[command(subcommand)]
    Calls(Calls),
    /// Call detail records
    #[command(subcommand)]
    Cdrs(Cdrs),
    /// Daemon and data-plane status and counters
    Status,
    /// Security alerts (permissive firewall, admin without TOTP, self-signed certificate)
    Alerts,
    /// Follow the live event stream (counters every second, calls, bans, alerts, audit);
    /// reconnects when sipd restarts. --json: one {"event","data"} object per line
    Events {
        /// Stop after this many events
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Staff users (admin)
    #[command(subcommand)]
    Staff(Staff),
    /// The audit log (admin)
    Audit(Audit),
    /// Print a shell completion script
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct Login {
    /// Staff username (prompted if absent)
    #[arg(short, long, value_name = "NAME")]
    pub user: Option<String>,
    /// Read the password from the first line of standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// TOTP code (prompted when the server asks for one)
    #[arg(long, value_name = "CODE")]
    pub totp: Option<String>,
    /// The code the server mailed at the previous login (prompted when it mails one)
    #[arg(long, value_name = "CODE")]
    pub email_code: Option<String>,
    /// Print only the token on standard output (e.g. for SBC_TOKEN)
    #[arg(long)]
    pub print_token: bool,
    /// Do not save the session
    #[arg(long)]
    pub no_save: bool,
}

#[derive(Debug, Subcommand)]
pub enum Totp {
    /// Begin enrolment: prints the otpauth:// URI and a QR code for an authenticator app
    Enrol,
    /// Finish enrolment with a code from the app (prompted if absent)
    Confirm { code: Option<String> },
}

/// An account, a staff user: an id, or a name looked up in the list.
pub type Target = String;

#[derive(Debug, Subcommand)]
pub enum Accounts {
    /// List accounts
    #[command(visible_alias = "ls")]
    List,
    /// Show one account
    Get { account: Target },
    /// Create an account
    #[command(visible_alias = "add")]
    Create(AccountFields),
    /// Change an account (only the fields given)
    Update {
        account: Target,
        #[command(flatten)]
        fields: AccountFields,
    },
    /// Delete an account
    #[command(visible_alias = "rm")]
    Delete { account: Target },
    /// Add credit to an account's balance
    Topup {
        account: Target,
        /// Decimal amount, e.g. 5.00
        #[arg(allow_hyphen_values = true)]
        amount: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// The account's top-ups, oldest first
    Topups { account: Target },
    /// Show the password template of the account's customer logins (and the rules in effect)
    Template { account: Target },
    /// Set the password template of the account's customer logins (fields not given: the
    /// system default)
    TemplateSet {
        account: Target,
        /// Minimum password length (8-256)
        #[arg(long, value_name = "N")]
        min_length: Option<u64>,
        /// Character classes required (1-4: lowercase, uppercase, digit, other)
        #[arg(long, value_name = "N")]
        min_classes: Option<u64>,
        /// Days before a password must be changed (0: never)
        #[arg(long, value_name = "DAYS")]
        max_age_days: Option<u64>,
        /// Whether the account's users must enrol a second factor (TOTP)
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        second_factor: Option<bool>,
    },
    /// Remove the account's password template (back to the system default)
    TemplateClear { account: Target },
}

#[derive(Debug, Args, Default)]
pub struct AccountFields {
    /// Account name (unique)
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub enabled: Enabled,
    /// Tariff name ("" or "none": no tariff)
    #[arg(long)]
    pub tariff: Option<String>,
    /// Opening balance, decimal (create only; use topup afterwards)
    #[arg(long, allow_hyphen_values = true)]
    pub balance: Option<String>,
    /// New calls per second (absent: unlimited)
    #[arg(long, value_name = "N")]
    pub cps_limit: Option<u32>,
    /// Concurrent calls (absent: unlimited)
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<u32>,
    /// Longest call; it is cut when reached
    #[arg(long, value_name = "SECS")]
    pub max_call_secs: Option<u32>,
    /// SIP digest username
    #[arg(long, value_name = "NAME")]
    pub sip_username: Option<String>,
    /// Read the SIP digest password from the first line of standard input
    #[arg(long)]
    pub sip_password_stdin: bool,
    /// Remove SIP digest credentials (IP authentication only)
    #[arg(long, conflicts_with_all = ["sip_username", "sip_password_stdin"])]
    pub no_sip: bool,
    #[command(flatten)]
    pub data: Data,
}

#[derive(Debug, Args, Default)]
pub struct Enabled {
    /// Enable it
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Disable it (calls refused)
    #[arg(long)]
    pub disable: bool,
}

// Raw JSON merged under the flags (flags win): for fields sbcctl has no flag for.
#[derive(Debug, Args, Default)]
pub struct Data {
    /// JSON object sent as the body, flags applied on top; @FILE reads a file, @- stdin
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Rules {
    /// List an account's rules
    #[command(visible_alias = "ls")]
    List { account: Target },
    /// Add a rule to an account
    #[command(visible_alias = "create")]
    Add {
        account: Target,
        #[command(flatten)]
        fields: RuleFields,
    },
    /// Change a rule (only the fields given)
    Update {
        rule: u64,
        #[command(flatten)]
        fields: RuleFields,
    },
    /// Delete a rule
    #[command(visible_alias = "rm")]
    Delete { rule: u64 },
}

#[derive(Debug, Args, Default)]
pub struct RuleFields {
    /// Rule name (required for add)
    #[arg(long)]
    pub name: Option<String>,
    /// Source address or CIDR ("any": no restriction)
    #[arg(long, value_name = "CIDR")]
    pub remote: Option<String>,
    /// Caller (CLI) prefix
    #[arg(long, value_name = "PREFIX", conflicts_with = "cli_regex")]
    pub cli_prefix: Option<String>,
    /// Caller (CLI) regular expression
    #[arg(long, value_name = "REGEX")]
    pub cli_regex: Option<String>,
    /// Called number (CLD) prefix
    #[arg(long, value_name = "PREFIX", conflicts_with = "cld_regex")]
    pub cld_prefix: Option<String>,
    /// Called number (CLD) regular expression
    #[arg(long, value_name = "REGEX")]
    pub cld_regex: Option<String>,
    /// IP authentication only (no digest challenge)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub ip_only: Option<bool>,
    #[command(flatten)]
    pub data: Data,
}

#[derive(Debug, Subcommand)]
pub enum Tariffs {
    /// List tariffs
    #[command(visible_alias = "ls")]
    List,
    /// Show one tariff
    Get { tariff: Target },
    /// Create a tariff
    #[command(visible_alias = "add")]
    Create(TariffFields),
    /// Change a tariff (only the fields given)
    Update {
        tariff: Target,
        #[command(flatten)]
        fields: TariffFields,
    },
    /// Delete a tariff
    #[command(visible_alias = "rm")]
    Delete { tariff: Target },
}

#[derive(Debug, Args, Default)]
pub struct TariffFields {
    /// Tariff name (unique; accounts refer to it)
    #[arg(long)]
    pub name: Option<String>,
    /// Rate per minute, decimal (e.g. 0.012)
    #[arg(long, value_name = "DECIMAL")]
    pub rate: Option<String>,
    /// Expected call duration for balance reservation
    #[arg(long, value_name = "SECS")]
    pub expected_call_secs: Option<u32>,
    /// First billing increment
    #[arg(long, value_name = "SECS")]
    pub initial_increment_secs: Option<u32>,
    /// Following billing increments
    #[arg(long, value_name = "SECS")]
    pub increment_secs: Option<u32>,
    #[command(flatten)]
    pub data: Data,
}

#[derive(Debug, Subcommand)]
pub enum Connections {
    /// List connections
    #[command(visible_alias = "ls")]
    List,
    /// Show one connection
    Get { connection: Target },
    /// Create a connection
    #[command(visible_alias = "add")]
    Create(ConnectionFields),
    /// Change a connection (only the fields given)
    Update {
        connection: Target,
        #[command(flatten)]
        fields: ConnectionFields,
    },
    /// Delete a connection
    #[command(visible_alias = "rm")]
    Delete { connection: Target },
}

#[derive(Debug, Args, Default)]
pub struct ConnectionFields {
    /// Connection name (unique)
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub enabled: Enabled,
    /// Upstream address, HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    pub destination: Option<String>,
    /// SIP transport to the upstream
    #[arg(long, value_parser = ["udp", "tcp"])]
    pub transport: Option<String>,
    /// Called-number prefix routed here (repeat for several; replaces the list)
    #[arg(long = "cld-prefix", value_name = "PREFIX")]
    pub cld_prefixes: Vec<String>,
    /// Concurrent calls to this upstream (absent: unlimited)
    #[arg(long, value_name = "N")]
    pub max_channels: Option<u32>,
    /// New calls per second to this upstream (absent: unlimited)
    #[arg(long, value_name = "N")]
    pub cps_limit: Option<u32>,
    /// Lower is tried first
    #[arg(long, value_name = "N")]
    pub priority: Option<i32>,
    #[command(flatten)]
    pub data: Data,
}

#[derive(Debug, Subcommand)]
pub enum Firewall {
    /// Services with their allow lists, and the deny list
    #[command(visible_alias = "ls")]
    List,
    /// Allow a CIDR to reach a service (makes a restricted service's list non-empty)
    Allow { service: String, cidr: String },
    /// Remove a CIDR from a service's allow list
    Disallow { service: String, cidr: String },
    /// Drop everything from a CIDR, on every port
    Deny { cidr: String },
    /// Remove a deny entry by its id (see `firewall list`)
    Undeny { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum Bans {
    /// List bans
    #[command(visible_alias = "ls")]
    List,
    /// Ban an address or a prefix, e.g. 192.0.2.0/24 (stored: it survives a restart)
    Add {
        /// An address (banned as its host prefix) or a CIDR
        #[arg(value_name = "ADDR|CIDR")]
        addr: String,
        /// How long, in seconds (absent: permanent, until `bans remove`)
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        duration: Option<u64>,
        /// A note for other operators (shown as NOTE; the ban's REASON is `manual`)
        #[arg(long, visible_alias = "note", value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Lift the ban of exactly this prefix (an address alone: its host prefix)
    #[command(visible_alias = "rm")]
    Remove {
        #[arg(value_name = "ADDR|CIDR")]
        addr: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Calls {
    /// List calls in progress
    #[command(visible_alias = "ls")]
    List {
        /// Every node's calls, each with its node (a cluster: `[cluster]` set)
        #[arg(long)]
        cluster: bool,
    },
    /// Hang up a call in progress (BYE to both legs)
    Hangup {
        id: u64,
        /// The cluster node the call is on (as `calls list --cluster` shows it)
        #[arg(long)]
        node: Option<String>,
    },
    /// The SIP messages of a live or recently ended call, oldest first (--json: with the
    /// raw messages)
    Messages {
        /// The call's id, as `calls list` shows it
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum Cdrs {
    /// List CDRs, oldest first; page with --after the last id
    #[command(visible_alias = "ls")]
    List(CdrFilter),
}

#[derive(Debug, Args, Default)]
pub struct CdrFilter {
    /// Only CDRs with an id above this
    #[arg(long, value_name = "ID")]
    pub after: Option<u64>,
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Account id
    #[arg(long, value_name = "ID")]
    pub account: Option<u64>,
    /// Start at or after: Unix ms or a UTC time (2026-05-01, 2026-05-01T13:45)
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Start before: Unix ms or a UTC time
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// `answered`, `failed`, or a SIP result code (e.g. 200, 403)
    #[arg(long, value_name = "CODE", value_parser = parse_result)]
    pub result: Option<String>,
    /// The server's CSV export, as it is, on standard output
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

#[derive(Debug, Subcommand)]
pub enum Staff {
    /// List staff users
    #[command(visible_alias = "ls")]
    List,
    /// Create a staff user, or a customer user of one account (`--role customer --account
    /// NAME`); password prompted, or --password-stdin
    #[command(visible_alias = "create")]
    Add {
        username: String,
        #[arg(long, value_parser = ["admin", "operator", "read-only", "readonly", "customer"])]
        role: String,
        /// The account (id or name) of a customer user
        #[arg(long, value_name = "ACCOUNT", required_if_eq("role", "customer"))]
        account: Option<String>,
        /// CIDR the user may log in from (repeat; default any)
        #[arg(long = "allowed-host", value_name = "CIDR")]
        allowed_hosts: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
        /// Whether they must change the password at first login (the server's default: true;
        /// `--must-change-password=false` for a password they chose themselves)
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        must_change_password: Option<bool>,
        /// Their email address (email codes go there; it seasons the password hash)
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        /// Their second factor is an emailed code (needs --email and a role the policy allows)
        #[arg(long)]
        email_codes: bool,
    },
    /// Change a staff user's role, state or allowed hosts
    Update {
        user: Target,
        #[arg(long, value_parser = ["admin", "operator", "read-only", "readonly"])]
        role: Option<String>,
        #[command(flatten)]
        enabled: Enabled,
        /// CIDR the user may log in from (repeat; replaces the list)
        #[arg(long = "allowed-host", value_name = "CIDR")]
        allowed_hosts: Vec<String>,
        /// Allow logins from anywhere (clears the list)
        #[arg(long, conflicts_with = "allowed_hosts")]
        any_host: bool,
        /// A new email address
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        /// Remove their email address
        #[arg(long, conflicts_with = "email")]
        no_email: bool,
        /// Turn email codes on or off
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        email_codes: Option<bool>,
        /// Also set a new password (prompted, or --password-stdin), which they must change at
        /// next login: needed when the email (or the username of a user without one) changes,
        /// since it seasons the password hash
        #[arg(long)]
        reset_password: bool,
        /// With --reset-password: read the new password from standard input
        #[arg(long, requires = "reset_password")]
        password_stdin: bool,
    },
    /// Delete a staff user
    #[command(visible_alias = "rm")]
    Delete { user: Target },
    /// Revoke every session of a user
    Revoke { user: Target },
    /// Set a user's password (prompted, or --password-stdin)
    Password {
        user: Target,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user's TOTP enrolment (they enrol again at next login)
    TotpReset { user: Target },
}

#[derive(Debug, Args)]
pub struct Audit {
    /// Only entries with an id above this (resume after the last one seen)
    #[arg(long, value_name = "ID")]
    pub after: Option<u64>,
    /// Actor username (case-insensitive)
    #[arg(long)]
    pub user: Option<String>,
    /// Entry kind
    #[arg(long, value_parser = crate::console::screens::audit::KINDS)]
    pub kind: Option<String>,
    /// At or after: Unix ms or a UTC time
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Before: Unix ms or a UTC time
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

/// `--result`: `answered`, `failed` or a SIP code (100..=699).
fn parse_result(s: &str) -> Result<String, String> {
    match s {
        "answered" | "failed" => Ok(s.to_owned()),
        _ => match s.parse::<u16>() {
            Ok(c) if (100..=699).contains(&c) => Ok(c.to_string()),
            _ => Err(format!(
                "{s:?} is not `answered`, `failed` or a SIP code (100-699)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sbcctl").chain(args.iter().copied()))
    }

    #[test]
    fn parses_commands() {
        let c = parse(&["--json", "cdrs", "list", "--after", "5", "--limit", "10"]).unwrap();
        assert!(c.global.json);
        let Command::Cdrs(Cdrs::List(f)) = c.command else {
            panic!()
        };
        assert_eq!((f.after, f.limit), (Some(5), Some(10)));

        // Global flags after the subcommand.
        let c = parse(&["accounts", "list", "--json", "-k", "--url", "https://h:1"]).unwrap();
        assert!(c.global.json && c.global.insecure);
        assert_eq!(c.global.url.as_deref(), Some("https://h:1"));

        let c = parse(&["accounts", "topup", "acme", "-2.50", "--note", "fix"]).unwrap();
        let Command::Accounts(Accounts::Topup { amount, note, .. }) = c.command else {
            panic!()
        };
        assert_eq!((amount.as_str(), note.as_deref()), ("-2.50", Some("fix")));

        let c = parse(&[
            "connections",
            "create",
            "--name",
            "v1",
            "--cld-prefix",
            "44",
            "--cld-prefix",
            "33",
        ])
        .unwrap();
        let Command::Connections(Connections::Create(f)) = c.command else {
            panic!()
        };
        assert_eq!(f.cld_prefixes, ["44", "33"]);

        let c = parse(&["rules", "add", "1", "--ip-only"]).unwrap();
        let Command::Rules(Rules::Add { fields, .. }) = c.command else {
            panic!()
        };
        assert_eq!(fields.ip_only, Some(true));
        assert!(parse(&["logout", "--all"]).is_ok());
        assert!(parse(&["staff", "totp-reset", "bob"]).is_ok());
        assert!(parse(&["staff", "update", "bob", "--email", "b@example.net"]).is_ok());
        assert!(parse(&["staff", "update", "bob", "--no-email", "--reset-password"]).is_ok());
        assert!(parse(&["staff", "update", "bob", "--email", "x@y.z", "--no-email"]).is_err());
        assert!(parse(&["staff", "update", "bob", "--password-stdin"]).is_err());
        let c = parse(&["email", "ann@example.net", "--codes", "--stdin"]).unwrap();
        let Command::Email { address, codes, .. } = c.command else {
            panic!()
        };
        assert_eq!(
            (address.as_deref(), codes),
            (Some("ann@example.net"), Some(true))
        );
        assert!(parse(&["email", "a@b.c", "--remove"]).is_err());
        assert!(parse(&["login", "--email-code", "123456"]).is_ok());
        assert!(parse(&["completions", "bash"]).is_ok());
        assert!(parse(&["accounts", "ls"]).is_ok());
    }

    #[test]
    fn rejects_bad_usage() {
        assert!(parse(&["cdrs", "list", "--csv", "--json"]).is_err());
        assert!(parse(&["accounts", "update", "1", "--enable", "--disable"]).is_err());
        assert!(parse(&["rules", "add", "1", "--cli-prefix", "1", "--cli-regex", "x"]).is_err());
        assert!(parse(&["staff", "add", "bob", "--role", "root"]).is_err());
        assert!(parse(&["connections", "create", "--transport", "sctp"]).is_err());
        assert!(parse(&["calls", "hangup", "x"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
        assert!(parse(&["cdrs", "list", "--result", "99"]).is_err());
        assert!(parse(&["cdrs", "list", "--result", "ok"]).is_err());
        assert!(parse(&["audit", "--kind", "account.update"]).is_err());
        assert!(parse(&["bans", "add", "192.0.2.1", "--duration", "0"]).is_err());
    }

    #[test]
    fn parses_server_shapes() {
        let c = parse(&["cdrs", "list", "--result", "answered"]).unwrap();
        let Command::Cdrs(Cdrs::List(f)) = c.command else {
            panic!()
        };
        assert_eq!(f.result.as_deref(), Some("answered"));
        let c = parse(&["cdrs", "list", "--result", "486"]).unwrap();
        let Command::Cdrs(Cdrs::List(f)) = c.command else {
            panic!()
        };
        assert_eq!(f.result.as_deref(), Some("486"));
        let c = parse(&["audit", "--after", "7", "--kind", "update"]).unwrap();
        let Command::Audit(a) = c.command else {
            panic!()
        };
        assert_eq!((a.after, a.kind.as_deref()), (Some(7), Some("update")));
        for (args, want) in [
            (&["staff", "add", "ops", "--role", "operator"][..], None),
            (
                &[
                    "staff",
                    "add",
                    "ops",
                    "--role",
                    "operator",
                    "--must-change-password",
                ][..],
                Some(true),
            ),
            (
                &[
                    "staff",
                    "add",
                    "ops",
                    "--role",
                    "operator",
                    "--must-change-password=false",
                ][..],
                Some(false),
            ),
        ] {
            let Command::Staff(Staff::Add {
                must_change_password,
                ..
            }) = parse(args).unwrap().command
            else {
                panic!()
            };
            assert_eq!(must_change_password, want, "{args:?}");
        }
        let c = parse(&["bans", "add", "192.0.2.1", "--note", "x"]).unwrap();
        let Command::Bans(Bans::Add {
            reason, duration, ..
        }) = c.command
        else {
            panic!()
        };
        assert_eq!((reason.as_deref(), duration), (Some("x"), None));
    }

    #[test]
    fn help_documents_exit_codes_and_hides_test_flag() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("5  locked out"), "{help}");
        assert!(help.contains("SBC_TOKEN"));
        assert!(!help.contains("allow-http"));
    }
}
