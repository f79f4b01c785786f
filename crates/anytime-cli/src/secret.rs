//! What a wallet command asks the person running it: the payment PIN (typed without echo when
//! stdin is a terminal; `ANYTIME_PIN` / `ANYTIME_CURRENT_PIN` or a line of stdin for scripts) or a
//! top-up's second-step code. The question is answered by the process the command was typed in,
//! also when a running `follow` runs the command for it (see `profile_access`): that process has
//! the terminal and the environment.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AskKind {
    /// The payment PIN, to pay.
    Pin,
    /// A PIN to set (typed twice on a terminal).
    NewPin,
    /// The PIN set now, to change it.
    CurrentPin,
    /// The code of a sandbox top-up's second step (not secret: echoed).
    Code,
}

impl AskKind {
    /// The environment variable that answers it for scripts.
    pub fn env(self) -> Option<&'static str> {
        match self {
            AskKind::Pin | AskKind::NewPin => Some("ANYTIME_PIN"),
            AskKind::CurrentPin => Some("ANYTIME_CURRENT_PIN"),
            AskKind::Code => None,
        }
    }

    fn hidden(self) -> bool {
        self != AskKind::Code
    }

    fn what(self) -> &'static str {
        match self {
            AskKind::Pin => "no payment PIN was given",
            AskKind::NewPin => "no new PIN was given",
            AskKind::CurrentPin => "the current PIN is needed to change it, and none was given",
            AskKind::Code => "no code was given",
        }
    }

    fn how(self) -> String {
        match self.env() {
            Some(var) => format!("run it in a terminal, set {var}, or pass it as a line on stdin"),
            None => "run it in a terminal, pass --code CODE, or pass it as a line on stdin".to_owned(),
        }
    }
}

/// A question, with the prompt shown on a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    pub kind: AskKind,
    pub prompt: String,
}

/// Answers `ask` in this process: its environment variable, else the terminal (without echo for
/// PINs), else a line of stdin.
pub fn answer(ask: &Ask) -> anyhow::Result<String> {
    if let Some(value) = ask.kind.env().and_then(|var| std::env::var(var).ok()) {
        return Ok(value);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = prompt(&ask.prompt, ask.kind.hidden())?;
        if ask.kind == AskKind::NewPin {
            let again = prompt("Type the new PIN again: ", true)?;
            if again != first {
                bail!("the two PINs differ; nothing changed");
            }
        }
        return Ok(first);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line).context("while reading stdin")?;
    if read == 0 {
        bail!("{}: {}", ask.kind.what(), ask.kind.how());
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Shows `text` on stderr and reads a line from the terminal on stdin, hiding what is typed.
fn prompt(text: &str, hidden: bool) -> anyhow::Result<String> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{text}")?;
    stderr.flush()?;
    let _echo_off = if hidden { Some(EchoOff::new()?) } else { None };
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("while reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The terminal on stdin without echo (newlines still echoed) while this lives.
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    fn new() -> anyhow::Result<EchoOff> {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0 or fails.
        let mut term: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a termios for the call's duration.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut term) } != 0 {
            return Err(std::io::Error::last_os_error()).context("while reading the terminal's settings");
        }
        let saved = term;
        term.c_lflag &= !libc::ECHO;
        term.c_lflag |= libc::ECHONL;
        // SAFETY: as above; settings derived from the terminal's own.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &term) } != 0 {
            return Err(std::io::Error::last_os_error()).context("while turning the terminal's echo off");
        }
        Ok(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_travel_as_json() {
        let ask = Ask { kind: AskKind::CurrentPin, prompt: "Current PIN: ".into() };
        let line = serde_json::to_string(&ask).unwrap();
        assert_eq!(line, r#"{"kind":"current_pin","prompt":"Current PIN: "}"#);
        assert_eq!(serde_json::from_str::<Ask>(&line).unwrap(), ask);
        assert_eq!(AskKind::NewPin.env(), Some("ANYTIME_PIN"));
        assert_eq!(AskKind::Code.env(), None);
    }
}
