//! Every key the console knows, in one table: dispatch, the `?` help and the bottom key bar
//! are all built from it, so they cannot disagree.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key means, before a component decides what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Leave.
    Quit,
    /// Show or hide the help.
    Help,
    /// Next screen.
    NextScreen,
    /// Previous screen.
    PrevScreen,
    /// Screen by number (1-based).
    Screen(u8),
    /// Selection up.
    Up,
    /// Selection down.
    Down,
    /// A page up.
    PageUp,
    /// A page down.
    PageDown,
    /// First row.
    Top,
    /// Last row.
    Bottom,
    /// Edit the filter.
    Filter,
    /// Drill in.
    Enter,
    /// Back out.
    Back,
    /// Freeze the live view.
    Pause,
    /// Next sort column.
    Sort,
    /// Ask again now.
    Refresh,
    /// Hang the selected call up.
    Hangup,
    /// Remove the selected ban.
    Unban,
    /// Add a ban.
    Ban,
    /// Acknowledge the selected alert.
    Ack,
    /// Show or hide the sources never banned.
    NeverBans,
    /// Follow new entries.
    Follow,
    /// Add an allow entry.
    Allow,
    /// Add a deny entry.
    Deny,
    /// Remove the selected entry.
    Remove,
    /// Show or hide the raw message pane.
    Raw,
    /// Open the filter form (CDRs: account, result, time; audit: user, action, text).
    Filters,
    /// The next time window (CDRs).
    Window,
    /// The next result filter: all, answered, failed (CDRs).
    Outcome,
    /// Create a staff user.
    StaffAdd,
    /// Change the selected staff user's role.
    StaffRole,
    /// Disable or enable the selected staff user.
    StaffEnable,
    /// End every session of the selected staff user.
    StaffRevoke,
    /// Remove the selected staff user's TOTP factor.
    StaffTotpReset,
}

/// Where a binding works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everywhere but in text fields.
    Global,
    /// Every list screen.
    List,
    /// The calls list.
    Calls,
    /// A call's ladder.
    Ladder,
    /// The bans list.
    Bans,
    /// The audit log.
    Audit,
    /// The alerts list.
    Alerts,
    /// The firewall.
    Firewall,
    /// The call records.
    Cdrs,
    /// Staff.
    Staff,
}

impl Scope {
    /// The help's heading.
    pub fn title(self) -> &'static str {
        match self {
            Scope::Global => "Everywhere",
            Scope::List => "Lists",
            Scope::Calls => "Calls",
            Scope::Ladder => "Call ladder",
            Scope::Bans => "Bans",
            Scope::Audit => "Audit",
            Scope::Alerts => "Alerts",
            Scope::Firewall => "Firewall",
            Scope::Cdrs => "Call records",
            Scope::Staff => "Staff (admins)",
        }
    }
}

/// A key as the table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A printable character (case matters: `K` is not `k`).
    Char(char),
    /// A function key.
    F(u8),
    /// Arrow up.
    Up,
    /// Arrow down.
    Down,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Home.
    Home,
    /// End.
    End,
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Tab.
    Tab,
    /// Shift-Tab.
    BackTab,
    /// Delete.
    Delete,
}

impl Key {
    /// How the help and the key bar write it.
    pub fn label(self) -> String {
        match self {
            Key::Char(c) => c.to_string(),
            Key::F(n) => format!("F{n}"),
            Key::Up => "↑".into(),
            Key::Down => "↓".into(),
            Key::PageUp => "PgUp".into(),
            Key::PageDown => "PgDn".into(),
            Key::Home => "Home".into(),
            Key::End => "End".into(),
            Key::Enter => "Enter".into(),
            Key::Esc => "Esc".into(),
            Key::Tab => "Tab".into(),
            Key::BackTab => "S-Tab".into(),
            Key::Delete => "Del".into(),
        }
    }

    /// The table's name for a terminal key event; `None` for chords the console ignores.
    pub fn from_event(ev: KeyEvent) -> Option<Key> {
        if ev
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return None;
        }
        Some(match ev.code {
            KeyCode::Char(c) => Key::Char(c),
            KeyCode::F(n) => Key::F(n),
            KeyCode::Up => Key::Up,
            KeyCode::Down => Key::Down,
            KeyCode::PageUp => Key::PageUp,
            KeyCode::PageDown => Key::PageDown,
            KeyCode::Home => Key::Home,
            KeyCode::End => Key::End,
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc => Key::Esc,
            KeyCode::Tab => Key::Tab,
            KeyCode::BackTab => Key::BackTab,
            KeyCode::Delete => Key::Delete,
            _ => return None,
        })
    }
}

/// One line of the key map.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// Where it works.
    pub scope: Scope,
    /// The keys, the first one shown in the key bar.
    pub keys: &'static [Key],
    /// What they mean.
    pub command: Command,
    /// A short word for the key bar.
    pub short: &'static str,
    /// The help's sentence.
    pub help: &'static str,
    /// The key bar shows it.
    pub bar: bool,
    /// It changes or removes something on the daemon (always confirmed).
    pub destructive: bool,
    /// Only admins may (the firewall: a mistake can lock everyone out).
    pub admin: bool,
}

const fn b(
    scope: Scope,
    keys: &'static [Key],
    command: Command,
    short: &'static str,
    help: &'static str,
    bar: bool,
) -> Binding {
    Binding {
        scope,
        keys,
        command,
        short,
        help,
        bar,
        destructive: false,
        admin: false,
    }
}

const fn d(
    scope: Scope,
    keys: &'static [Key],
    command: Command,
    short: &'static str,
    help: &'static str,
) -> Binding {
    Binding {
        scope,
        keys,
        command,
        short,
        help,
        bar: true,
        destructive: true,
        admin: false,
    }
}

const fn admin(b: Binding) -> Binding {
    Binding { admin: true, ..b }
}

use Key::Char as C;

/// The key map. sngrep's keys are aliases where they mean the same: F1 help, F3 and `/`
/// display filter, F7 filter, F6 raw message, `p` pause, Enter the call flow, Esc and `q`
/// back out of it.
/// F5 (refresh) and F10 (quit) follow htop and mc: in sngrep they clear the list and pick
/// columns, which the console has no use for.
pub const BINDINGS: &[Binding] = &[
    b(
        Scope::Global,
        &[C('?'), Key::F(1)],
        Command::Help,
        "help",
        "show or hide this help",
        true,
    ),
    b(
        Scope::Global,
        &[C('q'), Key::F(10)],
        Command::Quit,
        "quit",
        "quit the console",
        true,
    ),
    b(
        Scope::Global,
        &[Key::Tab],
        Command::NextScreen,
        "next",
        "next screen",
        false,
    ),
    b(
        Scope::Global,
        &[Key::BackTab],
        Command::PrevScreen,
        "prev",
        "previous screen",
        false,
    ),
    b(
        Scope::Global,
        &[C('1')],
        Command::Screen(1),
        "dash",
        "dashboard",
        false,
    ),
    b(
        Scope::Global,
        &[C('2')],
        Command::Screen(2),
        "calls",
        "calls",
        false,
    ),
    b(
        Scope::Global,
        &[C('3')],
        Command::Screen(3),
        "bans",
        "bans",
        false,
    ),
    b(
        Scope::Global,
        &[C('4')],
        Command::Screen(4),
        "firewall",
        "firewall",
        false,
    ),
    b(
        Scope::Global,
        &[C('5')],
        Command::Screen(5),
        "accounts",
        "accounts and connections",
        false,
    ),
    b(
        Scope::Global,
        &[C('6')],
        Command::Screen(6),
        "cdrs",
        "call records",
        false,
    ),
    b(
        Scope::Global,
        &[C('7')],
        Command::Screen(7),
        "audit",
        "audit log (admins)",
        false,
    ),
    b(
        Scope::Global,
        &[C('8')],
        Command::Screen(8),
        "alerts",
        "alerts",
        false,
    ),
    b(
        Scope::Global,
        &[C('9')],
        Command::Screen(9),
        "staff",
        "staff (admins)",
        false,
    ),
    b(
        Scope::Global,
        &[C('p')],
        Command::Pause,
        "pause",
        "freeze or thaw the live view",
        true,
    ),
    b(
        Scope::Global,
        &[C('r'), Key::F(5)],
        Command::Refresh,
        "refresh",
        "ask the daemon again now",
        false,
    ),
    b(
        Scope::List,
        &[C('j'), Key::Down],
        Command::Down,
        "down",
        "next row",
        false,
    ),
    b(
        Scope::List,
        &[C('k'), Key::Up],
        Command::Up,
        "up",
        "previous row",
        false,
    ),
    b(
        Scope::List,
        &[Key::PageDown],
        Command::PageDown,
        "pgdn",
        "a page down",
        false,
    ),
    b(
        Scope::List,
        &[Key::PageUp],
        Command::PageUp,
        "pgup",
        "a page up",
        false,
    ),
    b(
        Scope::List,
        &[C('g'), Key::Home],
        Command::Top,
        "top",
        "first row",
        false,
    ),
    b(
        Scope::List,
        &[C('G'), Key::End],
        Command::Bottom,
        "end",
        "last row",
        false,
    ),
    b(
        Scope::List,
        &[C('/'), Key::F(3), Key::F(7)],
        Command::Filter,
        "filter",
        "filter: a regex, `!` first to invert; Enter keeps, Esc clears",
        true,
    ),
    b(
        Scope::Calls,
        &[C('s')],
        Command::Sort,
        "sort",
        "sort by the next column",
        true,
    ),
    b(
        Scope::Calls,
        &[Key::Enter],
        Command::Enter,
        "ladder",
        "open the call's SIP ladder",
        true,
    ),
    d(
        Scope::Calls,
        &[C('K')],
        Command::Hangup,
        "hang up",
        "hang the call up (asks first)",
    ),
    b(
        Scope::Ladder,
        &[Key::Esc, Key::Char('h'), C('q')],
        Command::Back,
        "back",
        "back to the calls (`q` too, as in sngrep's call flow)",
        true,
    ),
    b(
        Scope::Ladder,
        &[C('j'), Key::Down],
        Command::Down,
        "next",
        "next message",
        false,
    ),
    b(
        Scope::Ladder,
        &[C('k'), Key::Up],
        Command::Up,
        "prev",
        "previous message",
        false,
    ),
    b(
        Scope::Ladder,
        &[C('g'), Key::Home],
        Command::Top,
        "first",
        "first message",
        false,
    ),
    b(
        Scope::Ladder,
        &[C('G'), Key::End],
        Command::Bottom,
        "last",
        "last message",
        false,
    ),
    b(
        Scope::Ladder,
        &[Key::F(6), C('w')],
        Command::Raw,
        "raw",
        "show or hide the raw message",
        true,
    ),
    d(
        Scope::Ladder,
        &[C('K')],
        Command::Hangup,
        "hang up",
        "hang the call up (asks first)",
    ),
    d(
        Scope::Bans,
        &[C('u')],
        Command::Unban,
        "unban",
        "remove the selected ban (asks first)",
    ),
    d(
        Scope::Bans,
        &[C('b')],
        Command::Ban,
        "ban",
        "ban an address or prefix for a time (asks first)",
    ),
    b(
        Scope::Bans,
        &[C('n')],
        Command::NeverBans,
        "never",
        "show or hide the sources the IDS never bans, and why",
        true,
    ),
    b(
        Scope::Audit,
        &[C('f')],
        Command::Follow,
        "follow",
        "follow new entries",
        true,
    ),
    b(
        Scope::Audit,
        &[C('F')],
        Command::Filters,
        "filters",
        "filter by staff user, action and text (also while following)",
        true,
    ),
    b(
        Scope::Cdrs,
        &[C('F')],
        Command::Filters,
        "filters",
        "filter by account, result and time (asked of the daemon)",
        true,
    ),
    b(
        Scope::Cdrs,
        &[C('t')],
        Command::Window,
        "time",
        "time window: last 1h, 24h, 7d, all",
        true,
    ),
    b(
        Scope::Cdrs,
        &[C('o')],
        Command::Outcome,
        "result",
        "result: all, answered only, failed only",
        true,
    ),
    admin(d(
        Scope::Staff,
        &[C('n')],
        Command::StaffAdd,
        "new",
        "create a staff user (a made-up password is shown once)",
    )),
    admin(d(
        Scope::Staff,
        &[C('R')],
        Command::StaffRole,
        "role",
        "change the selected user's role (asks first)",
    )),
    admin(d(
        Scope::Staff,
        &[C('D')],
        Command::StaffEnable,
        "disable",
        "disable or enable the selected user (asks first)",
    )),
    admin(d(
        Scope::Staff,
        &[C('V')],
        Command::StaffRevoke,
        "revoke",
        "end every session of the selected user (asks first)",
    )),
    admin(d(
        Scope::Staff,
        &[C('T')],
        Command::StaffTotpReset,
        "totp",
        "remove the selected user's TOTP factor (asks first)",
    )),
    admin(d(
        Scope::Firewall,
        &[C('a')],
        Command::Allow,
        "allow",
        "add to a service's allow list (shows the change first)",
    )),
    admin(d(
        Scope::Firewall,
        &[C('d')],
        Command::Deny,
        "deny",
        "add to the deny list (shows the change first)",
    )),
    admin(d(
        Scope::Firewall,
        &[C('x'), Key::Delete],
        Command::Remove,
        "remove",
        "remove the selected entry (shows the change first)",
    )),
    b(
        Scope::Alerts,
        &[C('a')],
        Command::Ack,
        "ack",
        "acknowledge the selected alert (on the daemon, audited, seen by all)",
        true,
    ),
];

/// The binding of a key in the given scopes (the first scope wins, then the next).
pub fn find(scopes: &[Scope], key: Key) -> Option<&'static Binding> {
    scopes.iter().find_map(|s| {
        BINDINGS
            .iter()
            .find(|b| b.scope == *s && b.keys.contains(&key))
    })
}

/// The command a key means in the given scopes.
pub fn lookup(scopes: &[Scope], key: Key) -> Option<Command> {
    find(scopes, key).map(|b| b.command)
}

/// The key bar's bindings for the given scopes, most specific first, each with the first of
/// its keys that still means it here (`q` backs out of the ladder, so quit shows as F10
/// there); a binding none of whose keys reach it is left out.
pub fn bar(scopes: &[Scope]) -> Vec<(Key, &'static Binding)> {
    scopes
        .iter()
        .flat_map(|s| BINDINGS.iter().filter(move |b| b.scope == *s && b.bar))
        .filter_map(|b| {
            let live = b
                .keys
                .iter()
                .copied()
                .find(|k| find(scopes, *k).is_some_and(|f| std::ptr::eq(f, b)))?;
            Some((live, b))
        })
        .collect()
}

/// Help lines for the given scopes: a heading per scope, then `keys  sentence`. The number
/// keys of the screens are one line (`1-9`), so the help fits 80×24.
pub fn help(scopes: &[Scope]) -> Vec<(Option<&'static str>, String, &'static str)> {
    let mut out = Vec::new();
    for s in scopes {
        out.push((Some(s.title()), String::new(), ""));
        let mut screens = 0;
        for b in BINDINGS.iter().filter(|b| b.scope == *s) {
            if let Command::Screen(n) = b.command {
                screens = screens.max(n);
                continue;
            }
            let keys: Vec<String> = b.keys.iter().map(|k| k.label()).collect();
            out.push((None, keys.join(" "), b.help));
        }
        if screens > 0 {
            out.push((
                None,
                format!("1-{screens}"),
                "go to a screen (numbered in the top bar)",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_scope_wins_and_every_destructive_key_is_shown() {
        assert_eq!(
            lookup(&[Scope::Ladder, Scope::Global], Key::Char('k')),
            Some(Command::Up)
        );
        assert_eq!(
            lookup(&[Scope::Calls, Scope::List, Scope::Global], Key::Char('K')),
            Some(Command::Hangup)
        );
        assert_eq!(lookup(&[Scope::Global], Key::Char('K')), None);
        assert_eq!(lookup(&[Scope::Global], Key::F(1)), Some(Command::Help));
        for b in BINDINGS.iter().filter(|b| b.destructive) {
            assert!(
                b.bar,
                "{:?} is destructive and must be in the key bar",
                b.command
            );
        }
    }

    #[test]
    fn no_key_means_two_things_in_one_scope() {
        for (i, a) in BINDINGS.iter().enumerate() {
            for b in &BINDINGS[i + 1..] {
                if a.scope == b.scope {
                    for k in a.keys {
                        assert!(!b.keys.contains(k), "{k:?} twice in {:?}", a.scope);
                    }
                }
            }
        }
    }
}
