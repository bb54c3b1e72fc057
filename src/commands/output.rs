//! How the technician commands print: aligned tables for people, `--json` for
//! scripts, a one-line progress note on stderr only when it is a terminal, and the
//! exit codes, all in one place so that docs/operations.md can list them.

use std::io::{IsTerminal, Write};

/// Exit codes shared by the commands (docs/operations.md lists them all).
pub mod exit {
    /// Unexpected trouble (a file that cannot be written, ...).
    pub const FAILURE: u8 = 1;
    /// The configuration is refused (also `run` and `check`).
    pub const CONFIG: u8 = 2;
    /// No daemon answers on the control socket.
    pub const NOT_RUNNING: u8 = 3;
    /// The control socket exists but this user may not use it.
    pub const PERMISSION: u8 = 4;
    /// The daemon answered, but could not do what was asked (unknown camera, no picture yet).
    pub const REFUSED: u8 = 5;
    /// The local event store cannot be read.
    pub const STORE: u8 = 6;
}

/// Prints rows as left-aligned columns; the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| if i + 1 == r.len() { cell.clone() } else { format!("{cell:<w$}", w = widths[i]) })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A progress note that rewrites one stderr line while on a terminal, and stays
/// silent otherwise (logs and pipes get only the result).
pub struct Progress {
    on: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress { on: std::io::stderr().is_terminal() }
    }

    pub fn say(&self, what: &str) {
        if self.on {
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[2K{what}…");
            let _ = e.flush();
        }
    }

    pub fn clear(&self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `-` for a missing value in a table.
pub fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A duration in seconds, short: `42s`, `3m05s`, `2h03m`, `4d02h`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_ages_read_well() {
        let t = table(&[vec!["ID".into(), "STATE".into()], vec!["east-gate".into(), "streaming".into()]]);
        assert_eq!(t, "ID         STATE\neast-gate  streaming\n");
        assert_eq!(
            (age(5), age(185), age(7380), age(90000)),
            ("5s".into(), "3m05s".into(), "2h03m".into(), "1d01h".into())
        );
    }
}
