//! What the user types: answers on the terminal, lines on standard input, `--data`.

use std::io::{self, BufRead, Write};

use serde_json::{Map, Value};

use super::Ctx;
use crate::api::Error;
use crate::cli::Data;

/// Questions asked on the terminal.
pub trait Prompt {
    /// A line, echoed.
    fn line(&mut self, label: &str) -> io::Result<String>;
    /// A secret, not echoed.
    fn secret(&mut self, label: &str) -> io::Result<String>;
}

/// Asks on `/dev/tty`, so prompts work while standard streams are redirected.
pub struct Tty;

impl Prompt for Tty {
    fn line(&mut self, label: &str) -> io::Result<String> {
        tty_read(label, false)
    }
    fn secret(&mut self, label: &str) -> io::Result<String> {
        tty_read(label, true)
    }
}

fn tty_read(label: &str, secret: bool) -> io::Result<String> {
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| io::Error::new(e.kind(), format!("no terminal to ask on: {e}")))?;
    let fd = tty.as_raw_fd();
    (&tty).write_all(label.as_bytes())?;
    // SAFETY: termios is plain data; fd is open for the lifetime of `tty`.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if secret && libc::tcgetattr(fd, &mut t) == 0 {
            let old = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            Some(old)
        } else {
            None
        }
    };
    let mut line = String::new();
    let read = io::BufReader::new(&tty).read_line(&mut line);
    if let Some(old) = saved {
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    }
    read?;
    Ok(trim_newline(line))
}

fn trim_newline(mut s: String) -> String {
    while s.ends_with(['\n', '\r']) {
        s.pop();
    }
    s
}

impl Ctx<'_, '_> {
    pub(super) fn stdin_line(&mut self, what: &str) -> Result<String, Error> {
        let mut line = String::new();
        match self.io.stdin.read_line(&mut line) {
            Ok(0) => Err(Error::Usage(format!("{what}: standard input is empty"))),
            Ok(_) => Ok(trim_newline(line)),
            Err(e) => Err(Error::Local(format!("{what}: reading standard input: {e}"))),
        }
    }

    pub(super) fn ask(&mut self, label: &str, secret: bool) -> Result<String, Error> {
        let r = if secret {
            self.io.prompt.secret(label)
        } else {
            self.io.prompt.line(label)
        };
        r.map_err(|e| Error::Usage(format!("{}: {e}", label.trim_end_matches([':', ' ']))))
    }

    /// A new password: from standard input, or asked twice.
    pub(super) fn new_password(&mut self, from_stdin: bool, label: &str) -> Result<String, Error> {
        if from_stdin {
            return self.stdin_line(label);
        }
        let p = self.ask(&format!("{label}: "), true)?;
        let again = self.ask(&format!("{label} again: "), true)?;
        if p != again {
            return Err(Error::Usage("the passwords differ".into()));
        }
        Ok(p)
    }

    /// `--data`: a JSON object, from the argument, `@FILE` or `@-`.
    pub(super) fn data(&mut self, d: &Data) -> Result<Map<String, Value>, Error> {
        let Some(text) = &d.data else {
            return Ok(Map::new());
        };
        let text = match text.strip_prefix('@') {
            Some("-") => {
                let mut s = String::new();
                io::Read::read_to_string(&mut self.io.stdin, &mut s)
                    .map_err(|e| Error::Local(format!("--data @-: {e}")))?;
                s
            }
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| Error::Local(format!("--data @{file}: {e}")))?,
            None => text.clone(),
        };
        match serde_json::from_str(&text) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Error::Usage("--data: expected a JSON object".into())),
            Err(e) => Err(Error::Usage(format!("--data: not JSON: {e}"))),
        }
    }
}
