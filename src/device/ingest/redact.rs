//! The one place URL credentials are hidden, for logs, errors and `check` output.
//!
//! Promises: [`userinfo`] replaces the `user:password@` of every `scheme://` URL in a
//! text with `***@` and leaves everything else as it was.

/// Replaces the `user:password@` of every URL in `text` with `***@`: parse errors
/// quote the offending line, and that line may hold a camera's password.
pub fn userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the path, or at the end of a quoted or spaced word.
        let end = tail.find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'').unwrap_or(tail.len());
        // The last '@', as URL parsers take it: a password may hold a raw '@'.
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_redacted_in_free_text() {
        assert_eq!(
            userinfo("url = \"rtsp://admin:pw@10.0.0.1/s\" and http://h/x"),
            "url = \"rtsp://***@10.0.0.1/s\" and http://h/x"
        );
        assert_eq!(userinfo("rtsp://admin:p@ss@10.0.0.1:554/s"), "rtsp://***@10.0.0.1:554/s");
        assert_eq!(userinfo("rtsp://user@cam"), "rtsp://***@cam");
        assert_eq!(userinfo("'rtsp://a:b@x' 'rtsp://c:d@y'"), "'rtsp://***@x' 'rtsp://***@y'");
    }

    #[test]
    fn text_without_credentials_is_unchanged() {
        for text in ["", "no url here", "rtsp://10.0.0.1/a@b", "mail me@example.com", "://"] {
            assert_eq!(userinfo(text), text);
        }
    }
}
