//! `[notices]`: how the grid point gives the street office's notices out loud, if at
//! all (docs/mqtt.md, "Notices").

use serde::{Deserialize, Serialize};

/// `[notices]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoticesConfig {
    /// `"tts"` (espeak-ng, Mandarin for Chinese text) or a command line run for each
    /// play, with `{notice_id}`, `{level}`, `{text}` and `{text_file}` filled in;
    /// notices are stored and answered but not played when absent.
    pub player: Option<String>,
    /// The ALSA device `tts` speaks into.
    #[serde(default = "default_alsa_device")]
    pub alsa_device: String,
    /// How many times an `urgent` notice is played (others once).
    #[serde(default = "default_repeat")]
    pub repeat: u32,
    /// Longest a single play may take before it is stopped and reported as failed.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

fn default_alsa_device() -> String {
    "default".into()
}
fn default_repeat() -> u32 {
    3
}
fn default_timeout_s() -> u64 {
    120
}

/// How a notice is played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Player {
    /// espeak-ng into `alsa_device`.
    Tts { alsa_device: String },
    /// This program with these arguments (placeholders not yet filled in).
    Command(Vec<String>),
}

impl Default for NoticesConfig {
    fn default() -> NoticesConfig {
        NoticesConfig {
            player: None,
            alsa_device: default_alsa_device(),
            repeat: default_repeat(),
            timeout_s: default_timeout_s(),
        }
    }
}

impl NoticesConfig {
    /// The player, if one is configured. A command line is split at white space (no
    /// shell, so a notice's text can never become a command).
    pub fn player(&self) -> Option<Player> {
        let p = self.player.as_deref()?.trim();
        match p {
            "tts" => Some(Player::Tts { alsa_device: self.alsa_device.clone() }),
            _ => Some(Player::Command(p.split_whitespace().map(str::to_owned).collect())),
        }
    }

    pub(super) fn problems(&self, bad: &mut impl FnMut(String, String)) {
        if let Some(p) = &self.player
            && p.trim().is_empty()
        {
            bad("notices.player".into(), "is empty: use \"tts\" or a command line, or leave it out".into());
        }
        if !(1..=10).contains(&self.repeat) {
            bad("notices.repeat".into(), format!("{} is outside 1..=10", self.repeat));
        }
        if !(1..=3600).contains(&self.timeout_s) {
            bad("notices.timeout_s".into(), format!("{} is outside 1..=3600 seconds", self.timeout_s));
        }
        if self.alsa_device.is_empty() || self.alsa_device.chars().any(char::is_whitespace) {
            bad("notices.alsa_device".into(), "must be an ALSA device name such as \"default\" or \"plughw:1\"".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn player_is_tts_or_a_split_command_line() {
        let mut c = NoticesConfig::default();
        assert_eq!(c.player(), None);
        c.player = Some("tts".into());
        assert_eq!(c.player(), Some(Player::Tts { alsa_device: "default".into() }));
        c.player = Some(" aplay  -D plughw:1 /s/{level}.wav ".into());
        let Some(Player::Command(args)) = c.player() else { panic!() };
        assert_eq!(args, ["aplay", "-D", "plughw:1", "/s/{level}.wav"]);
        let mut problems = Vec::new();
        c.repeat = 0;
        c.player = Some(" ".into());
        c.problems(&mut |k, _| problems.push(k));
        assert_eq!(problems, ["notices.player", "notices.repeat"]);
    }
}
