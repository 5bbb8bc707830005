//! The columns of each table sbcctl prints: header and the field (dotted path) it shows.

use crate::table::{Col, col, or_null, time};

pub(super) const ACCOUNT_COLS: &[Col] = &[
    col("ID", "id"),
    col("NAME", "name"),
    col("ENABLED", "enabled"),
    col("TARIFF", "tariff"),
    col("BALANCE", "balance"),
    col("CPS", "cps_limit"),
    col("SESSIONS", "max_sessions"),
    col("MAX SECS", "max_call_secs"),
    col("SIP USER", "sip.username"),
];
pub(super) const TOPUP_COLS: &[Col] = &[
    time("TIME (UTC)", "at_ms"),
    col("AMOUNT", "amount"),
    col("BALANCE AFTER", "balance_after"),
    col("NOTE", "note"),
];
pub(super) const RULE_COLS: &[Col] = &[
    col("ID", "id"),
    col("ACCOUNT", "account_id"),
    col("NAME", "name"),
    col("REMOTE", "remote"),
    col("CLI", "cli"),
    col("CLD", "cld"),
    col("IP ONLY", "ip_only"),
];
pub(super) const TARIFF_COLS: &[Col] = &[
    col("ID", "id"),
    col("NAME", "name"),
    col("RATE/MIN", "rate_per_minute"),
    col("EXPECTED SECS", "expected_call_secs"),
    col("INITIAL SECS", "initial_increment_secs"),
    col("INCREMENT SECS", "increment_secs"),
];
pub(super) const CONNECTION_COLS: &[Col] = &[
    col("ID", "id"),
    col("NAME", "name"),
    col("ENABLED", "enabled"),
    col("DESTINATION", "destination"),
    col("TRANSPORT", "transport"),
    col("CLD PREFIXES", "cld_prefixes"),
    col("CHANNELS", "max_channels"),
    col("CPS", "cps_limit"),
    col("PRIORITY", "priority"),
];
pub(super) const FIREWALL_SERVICE_COLS: &[Col] = &[
    col("SERVICE", "service"),
    col("PORT", "port"),
    col("PROTO", "proto"),
    col("RESTRICTED", "restricted"),
    col("ALLOW", "allow"),
];
pub(super) const FIREWALL_ALLOW_COLS: &[Col] = &[
    col("ALLOW ENTRY", "service"),
    col("CIDR", "cidr"),
    col("ORIGIN", "origin"),
];
pub(super) const FIREWALL_DENY_COLS: &[Col] = &[
    col("DENY ID", "id"),
    col("CIDR", "cidr"),
    col("ORIGIN", "origin"),
];
pub(super) const BAN_COLS: &[Col] = &[
    col("PREFIX", "prefix"),
    col("REASON", "reason"),
    col("BY", "by"),
    or_null("REMAINING SECS", "remaining_secs", "permanent"),
    col("EXPIRED", "expired"),
    col("STORED", "persistent"),
    col("NOTE", "note"),
];
pub(super) const CALL_COLS: &[Col] = &[
    col("ID", "id"),
    col("CALL-ID", "call_id"),
    col("ACCOUNT", "account_id"),
    col("CLI", "cli"),
    col("CLD", "cld"),
    col("SOURCE", "source"),
    col("CONNECTION", "connection_id"),
    col("ANSWERED", "answered"),
    time("STARTED (UTC)", "started_ms"),
];
pub(super) const CLUSTER_CALL_COLS: &[Col] = &[
    col("NODE", "node"),
    col("ID", "id"),
    col("CALL-ID", "call_id"),
    col("ACCOUNT", "account_id"),
    col("CLI", "cli"),
    col("CLD", "cld"),
    col("SOURCE", "source"),
    col("ANSWERED", "answered"),
    time("STARTED (UTC)", "started_ms"),
];
pub(super) const CDR_COLS: &[Col] = &[
    col("ID", "id"),
    time("START (UTC)", "start_ms"),
    col("CALLER", "caller"),
    col("CALLEE", "callee"),
    col("ACCOUNT", "account_id"),
    col("CONNECTION", "connection_id"),
    col("RESULT", "result_code"),
    col("REASON", "reason"),
    col("SECS", "duration_secs"),
    col("COST", "cost"),
];
pub(super) const ALERT_COLS: &[Col] = &[
    col("SEVERITY", "severity"),
    col("CODE", "code"),
    col("MESSAGE", "message"),
];
pub(super) const STAFF_COLS: &[Col] = &[
    col("ID", "id"),
    col("USERNAME", "username"),
    col("ROLE", "role"),
    col("ENABLED", "enabled"),
    col("TOTP", "totp"),
    col("ACCOUNT", "account"),
    col("ALLOWED HOSTS", "allowed_hosts"),
    time("CREATED (UTC)", "created_ms"),
];
pub(super) const AUDIT_COLS: &[Col] = &[
    col("ID", "id"),
    time("TIME (UTC)", "ts_ms"),
    col("ACTOR", "actor"),
    col("SOURCE", "source"),
    col("KIND", "kind"),
    col("TARGET", "target"),
    col("RESULT", "result"),
    col("REASON", "reason"),
];
