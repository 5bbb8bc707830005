//! The one bit of terminal I/O the staff commands need: reading a password without echo.

use std::io::{BufRead, IsTerminal, Write};

/// Prints `prompt` on standard error and reads one line from standard input with echo off
/// when it is a terminal (plain read otherwise, for scripts). The newline is removed.
pub fn prompt_password(prompt: &str) -> std::io::Result<String> {
    let stdin = std::io::stdin();
    let mut err = std::io::stderr();
    err.write_all(prompt.as_bytes())?;
    err.flush()?;
    let tty = stdin.is_terminal();
    let saved = if tty { echo_off() } else { None };
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: restores the attributes read from the same descriptor.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    }
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn echo_off() -> Option<libc::termios> {
    // SAFETY: termios is plain data; tcgetattr fills it for a valid descriptor.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
            return None;
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        // The Enter key's newline is still shown.
        t.c_lflag |= libc::ECHONL;
        if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) != 0 {
            return None;
        }
        Some(saved)
    }
}
