//! Giving a notice out loud: espeak-ng into an ALSA device (`player = "tts"`), or the
//! technician's own command line with the notice's fields filled in.
//!
//! Promises: no shell ever sees a notice's text (arguments are passed as they are);
//! every play ends within the configured time (the player is killed after it); a
//! failure comes back as words for the receipt and the log.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::notices::StoredNotice;
use crate::contract::NoticeLevel;
use crate::device::config::Player;

/// Plays `n` once, or `repeat` times when it is urgent; `scratch` is a folder for the
/// text file a command line may ask for.
pub fn play(player: &Player, n: &StoredNotice, repeat: u32, limit: Duration, scratch: &Path) -> Result<(), String> {
    let times = if n.level == NoticeLevel::Urgent { repeat.max(1) } else { 1 };
    let text_file = scratch.join(format!("notice-{}.txt", n.notice_id));
    std::fs::write(&text_file, &n.text).map_err(|e| format!("cannot write {}: {e}", text_file.display()))?;
    let result = (0..times).try_for_each(|_| match player {
        Player::Tts { alsa_device } => speak(&n.text, alsa_device, limit),
        Player::Command(args) => run(&fill(args, n, &text_file), limit),
    });
    let _ = std::fs::remove_file(&text_file);
    result
}

/// The espeak-ng voice for `text`: Mandarin when it holds Han characters.
pub fn voice(text: &str) -> &'static str {
    let han = |c: char| matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}');
    if text.chars().any(han) { "cmn" } else { "en" }
}

fn fill(args: &[String], n: &StoredNotice, text_file: &Path) -> Vec<String> {
    args.iter()
        .map(|a| {
            a.replace("{notice_id}", &n.notice_id)
                .replace("{level}", n.level.as_str())
                .replace("{text_file}", &text_file.display().to_string())
                .replace("{text}", &n.text)
        })
        .collect()
}

/// espeak-ng's WAV on its standard output, into aplay on the ALSA device.
fn speak(text: &str, alsa_device: &str, limit: Duration) -> Result<(), String> {
    let mut espeak = Command::new("espeak-ng")
        .args(["-v", voice(text), "--stdout", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start espeak-ng: {e} (install the espeak-ng package)"))?;
    let wav = espeak.stdout.take().ok_or("espeak-ng gave no output")?;
    let aplay = Command::new("aplay")
        .args(["-q", "-D", alsa_device])
        .stdin(wav)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start aplay: {e} (install the alsa-utils package)"));
    let aplay = match aplay {
        Ok(a) => a,
        Err(e) => {
            let _ = espeak.kill();
            let _ = espeak.wait();
            return Err(e);
        }
    };
    if let Some(mut stdin) = espeak.stdin.take() {
        // Dropped at the end of this block, so espeak-ng sees the end of the text.
        let _ = stdin.write_all(text.as_bytes());
    }
    let spoke = finish(espeak, "espeak-ng", limit);
    let played = finish(aplay, &format!("aplay -D {alsa_device}"), limit);
    // aplay's failure first: espeak-ng's broken pipe is only its consequence.
    played.and(spoke)
}

fn run(args: &[String], limit: Duration) -> Result<(), String> {
    let (program, rest) = args.split_first().ok_or("notices.player is empty")?;
    let child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    finish(child, program, limit)
}

/// Waits for `child` for at most `limit`; a non-zero exit says what it wrote last.
fn finish(mut child: Child, name: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{name} took longer than {}s and was stopped", limit.as_secs()));
            }
            Err(e) => return Err(format!("{name}: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut said);
    }
    let last = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let last: String = last.chars().take(200).collect();
    Err(format!("{name} failed ({status}){}", if last.is_empty() { String::new() } else { format!(": {last}") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(level: NoticeLevel, text: &str) -> StoredNotice {
        StoredNotice {
            notice_id: "n-1".into(),
            level,
            text: text.into(),
            expires_at: "2099-01-01T00:00:00Z".into(),
            received_at: "2026-01-01T00:00:00Z".into(),
            play_started_at: None,
            played_at: None,
            error: None,
        }
    }

    #[test]
    fn the_voice_follows_the_script() {
        assert_eq!(voice("请在18:00前挪车"), "cmn");
        assert_eq!(voice("Flood warning: move vehicles"), "en");
    }

    #[test]
    fn a_command_gets_the_fields_as_arguments_and_urgent_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let script = dir.path().join("record.sh");
        std::fs::write(&script, format!("#!/bin/sh\necho \"$1|$2|$(cat \"$3\")|$4\" >> {}\n", log.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let player = Player::Command(
            [
                script.display().to_string(),
                "{notice_id}".into(),
                "{level}".into(),
                "{text_file}".into(),
                "{text}".into(),
            ]
            .into(),
        );
        let n = notice(NoticeLevel::Urgent, "水位; rm -rf / $(x)");
        play(&player, &n, 2, Duration::from_secs(10), dir.path()).unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(calls, "n-1|urgent|水位; rm -rf / $(x)|水位; rm -rf / $(x)\n".repeat(2));
        play(&player, &notice(NoticeLevel::Info, "x"), 2, Duration::from_secs(10), dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 3, "info plays once");
        assert!(!dir.path().join("notice-n-1.txt").exists(), "the text file is removed");
    }

    #[test]
    fn tts_speaks_chinese_and_english_into_alsa() {
        // ALSA's "null" device takes the sound without a sound card, as aplay reads it.
        let dir = tempfile::tempdir().unwrap();
        let tts = Player::Tts { alsa_device: "null".into() };
        for text in ["请在18:00前把车辆移出低洼路段", "Flood warning"] {
            play(&tts, &notice(NoticeLevel::Info, text), 1, Duration::from_secs(30), dir.path()).unwrap();
        }
        let nowhere = Player::Tts { alsa_device: "no-such-device".into() };
        let e = play(&nowhere, &notice(NoticeLevel::Info, "x"), 1, Duration::from_secs(30), dir.path()).unwrap_err();
        assert!(e.contains("aplay -D no-such-device failed"), "{e}");
    }

    #[test]
    fn failures_and_hangs_come_back_as_words() {
        let dir = tempfile::tempdir().unwrap();
        let n = notice(NoticeLevel::Info, "x");
        let fail = Player::Command(vec!["sh".into(), "-c".into(), "echo no sound card >&2; exit 3".into()]);
        let e = play(&fail, &n, 1, Duration::from_secs(10), dir.path()).unwrap_err();
        assert!(e.contains("sh failed") && e.contains("no sound card"), "{e}");
        let hang = Player::Command(vec!["sleep".into(), "30".into()]);
        let started = Instant::now();
        let e = play(&hang, &n, 1, Duration::from_secs(1), dir.path()).unwrap_err();
        assert!(e.contains("longer than 1s") && started.elapsed() < Duration::from_secs(5), "{e}");
        let missing = Player::Command(vec!["/nonexistent/player".into()]);
        assert!(play(&missing, &n, 1, Duration::from_secs(1), dir.path()).unwrap_err().contains("cannot start"));
    }
}
