//! What the desk says to a grid point (contract 1.1, "Commands from the desk"), and
//! what the grid point answers: command errors, notices and their receipts
//! (docs/schema/command_error, notice and notice_receipt .schema.json).

use serde::{Deserialize, Serialize};

pub const COMMAND_ERROR_SCHEMA: &str = "gridwatch.command_error/1";
pub const NOTICE_SCHEMA: &str = "gridwatch.notice/1";
pub const NOTICE_RECEIPT_SCHEMA: &str = "gridwatch.notice_receipt/1";

/// Largest command or notice payload a device takes.
pub const MAX_COMMAND_BYTES: usize = 4096;
/// Longest notice text, in characters.
pub const MAX_NOTICE_CHARS: usize = 500;

/// The answer on `{root}/{site}/command_errors` to a command that changed nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandError {
    pub schema: String,
    /// The command's topic, as it came.
    pub topic: String,
    /// Why, in words a desk operator can act on.
    pub reason: String,
    pub at: String,
}

/// How loudly a notice is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeLevel {
    Info,
    Warning,
    Urgent,
}

impl NoticeLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeLevel::Info => "info",
            NoticeLevel::Warning => "warning",
            NoticeLevel::Urgent => "urgent",
        }
    }
}

/// A notice from the street office, on `{root}/{site}/notices` or `{root}/all/notices`
/// (retained until it expires).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeMessage {
    pub schema: String,
    pub notice_id: String,
    pub level: NoticeLevel,
    pub text: String,
    pub expires_at: String,
}

/// A device's receipt for a notice, retained on
/// `{root}/{site}/notices/{notice_id}/receipt`; sent when received and again when
/// played (or when playing failed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeReceipt {
    pub schema: String,
    pub notice_id: String,
    pub site: String,
    pub received_at: String,
    pub played_at: Option<String>,
    pub error: Option<String>,
}

/// A request id or notice id: 1-64 characters `[A-Za-z0-9_-]`, safe as a topic level.
pub fn is_token(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_short_topic_safe_words() {
        assert!(is_token("01JDZ6T3V0K6J3Q8W1YB2M4C7P") && is_token("a_b-c") && is_token(&"x".repeat(64)));
        for bad in ["", "a/b", "a+b", "#", "a b", "é", &"x".repeat(65)] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_notice_reads_and_writes_as_the_contract_shows() {
        let text = r#"{"schema":"gridwatch.notice/1","notice_id":"n1","level":"urgent","text":"水","expires_at":"2026-12-01T18:00:00Z"}"#;
        let n: NoticeMessage = serde_json::from_str(text).unwrap();
        assert_eq!((n.level, n.text.as_str()), (NoticeLevel::Urgent, "水"));
        assert_eq!(serde_json::to_string(&n).unwrap(), text);
        assert!(serde_json::from_str::<NoticeMessage>(&text.replace("urgent", "loud")).is_err());
    }
}
