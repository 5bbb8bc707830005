//! Checks made on arguments before any request. The server decides; these only give a
//! clearer message, and sooner.

use std::net::IpAddr;

use crate::api::Error;
use crate::table;

/// A decimal amount: digits, an optional fraction of up to six digits, an optional sign.
pub fn check_amount(flag: &str, s: &str) -> Result<(), Error> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    let ok = !int.is_empty()
        && all_digits(int)
        && all_digits(frac)
        && frac.len() <= 6
        && (!digits.contains('.') || !frac.is_empty());
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{flag}: {s:?} is not a decimal amount like 12.50 (at most 6 decimals)"
        )))
    }
}

/// A CIDR, or a bare address (made /32 or /128).
pub fn check_cidr(what: &str, s: &str) -> Result<String, Error> {
    let s = s.trim();
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        if n.trunc() != n {
            return Err(Error::Usage(format!(
                "{what}: {s} has host bits set; did you mean {}?",
                n.trunc()
            )));
        }
        return Ok(n.to_string());
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(ipnet::IpNet::from(a).to_string());
    }
    Err(Error::Usage(format!(
        "{what}: {s:?} is not an address or CIDR (e.g. 192.0.2.0/24, 2001:db8::/32)"
    )))
}

/// `--allowed-host` values.
pub(super) fn check_cidrs(list: &[String]) -> Result<Vec<String>, Error> {
    list.iter()
        .map(|c| check_cidr("--allowed-host", c))
        .collect()
}

pub(super) fn check_host_port(flag: &str, s: &str) -> Result<(), Error> {
    let ok = s
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{flag}: {s:?} is not HOST:PORT (e.g. 192.0.2.10:5060, [2001:db8::1]:5060)"
        )))
    }
}

/// A `--from`/`--to` time as the query value the API takes (Unix ms; empty when absent).
pub(super) fn time_param(flag: &str, t: Option<&str>) -> Result<String, Error> {
    match t {
        Some(s) => table::parse_time(s)
            .map(|ms| ms.to_string())
            .map_err(|e| Error::Usage(format!("{flag}: {e}"))),
        None => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        for ok in ["0", "12", "12.5", "12.50", "-3.000001", "0.012"] {
            check_amount("x", ok).unwrap();
        }
        for bad in [
            "",
            "1.",
            ".5",
            "1,50",
            "1.0000001",
            "abc",
            "--1",
            "1e3",
            "+1",
        ] {
            assert!(check_amount("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(check_cidr("x", "10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert_eq!(check_cidr("x", "192.0.2.1").unwrap(), "192.0.2.1/32");
        assert_eq!(check_cidr("x", "2001:db8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(check_cidr("x", "::1").unwrap(), "::1/128");
        let e = check_cidr("x", "10.1.2.3/8").unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        assert!(check_cidr("x", "10.0.0.0/33").is_err());
        assert!(check_cidr("x", "host").is_err());
    }

    #[test]
    fn host_ports() {
        check_host_port("x", "192.0.2.1:5060").unwrap();
        check_host_port("x", "[2001:db8::1]:5060").unwrap();
        check_host_port("x", "vendor.example:5080").unwrap();
        for bad in ["192.0.2.1", ":5060", "h:0", "h:70000", "h:x"] {
            assert!(check_host_port("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_params() {
        assert_eq!(time_param("--from", None).unwrap(), "");
        assert_eq!(time_param("--from", Some("1000")).unwrap(), "1000");
        let e = time_param("--to", Some("soon")).unwrap_err().to_string();
        assert!(e.starts_with("--to: "), "{e}");
    }
}
