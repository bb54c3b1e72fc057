//! A camera's RTSP URL, parsed once (from the configuration or the command line) and
//! shown only with its secrets hidden.
//!
//! Promises: a `CameraUrl` is an `rtsp://` URL with a host. Its `Display`, `Debug` and
//! serialized forms are built from the parsed parts with the user name and password
//! replaced by `***` (and the values of query keys that look like secrets, as some
//! cameras take `?password=`), whatever characters they hold, percent-encoded or not.
//! Only [`CameraUrl::url`] gives the credentials, for the RTSP client.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::contract::Invalid;

#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct CameraUrl(Url);

/// Query keys whose values are hidden like a password.
const SECRET_KEYS: [&str; 5] = ["pass", "pwd", "token", "secret", "key"];

impl CameraUrl {
    /// Parses and checks `raw`; the error never quotes it (it may hold a password).
    pub fn parse(raw: &str) -> Result<CameraUrl, Invalid> {
        let url = Url::parse(raw)
            .map_err(|e| Invalid(format!("is not a valid URL ({e}); expected rtsp://host[:port]/path")))?;
        if url.scheme() != "rtsp" {
            return Err(Invalid(format!("scheme \"{}\" is not supported; use rtsp://", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Invalid("has no host; expected rtsp://host[:port]/path".into()));
        }
        Ok(CameraUrl(url))
    }

    /// The whole URL, credentials included: for the RTSP client only.
    pub fn url(&self) -> &Url {
        &self.0
    }

    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// The port, or RTSP's 554.
    pub fn port(&self) -> u16 {
        self.0.port().unwrap_or(554)
    }

    /// The URL as it may be shown: `rtsp://***@host:port/path`.
    pub fn redacted(&self) -> String {
        let mut shown = self.0.clone();
        let had_user = !shown.username().is_empty() || shown.password().is_some();
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        if shown.query().is_some() {
            let pairs: Vec<(String, String)> = shown
                .query_pairs()
                .map(|(k, v)| {
                    let secret = SECRET_KEYS.iter().any(|s| k.to_ascii_lowercase().contains(s));
                    (k.into_owned(), if secret { "***".to_owned() } else { v.into_owned() })
                })
                .collect();
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        let text = shown.to_string();
        match had_user {
            true => text.replacen("rtsp://", "rtsp://***@", 1),
            false => text,
        }
    }
}

impl TryFrom<String> for CameraUrl {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<CameraUrl, Invalid> {
        CameraUrl::parse(&raw)
    }
}

/// Serialized (as `check --print` shows it) without its secrets.
impl From<CameraUrl> for String {
    fn from(u: CameraUrl) -> String {
        u.redacted()
    }
}

impl std::fmt::Display for CameraUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Debug for CameraUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CameraUrl({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_whatever_they_hold() {
        // Every character RFC 3986 allows in userinfo, raw and percent-encoded, and some
        // it does not (a space, quotes, '@') percent-encoded.
        let secrets =
            ["p'w", "a!$&'()*+,;=b", "x-._~y", "with%20space", "q%22uote%22", "at%40sign", "c%3Acolon", "%E5%AF%86"];
        for pw in secrets {
            for user in ["admin", "ad'min", "u%40x"] {
                let raw = format!("rtsp://{user}:{pw}@10.0.0.7:8554/live/1?channel=2");
                let u = CameraUrl::parse(&raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
                let decoded = percent_encoding::percent_decode_str(pw).decode_utf8_lossy().into_owned();
                for shown in [u.to_string(), format!("{u:?}"), String::from(u.clone())] {
                    assert_eq!(shown.matches("***").count(), 1, "{shown}");
                    assert!(shown.contains("@10.0.0.7:8554/live/1?channel=2"), "{shown}");
                    assert!(!shown.contains(pw) && !shown.contains(&decoded), "{raw} shown as {shown}");
                }
                let plain = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
                assert_eq!(plain(u.url().password().unwrap()), plain(pw), "the client gets the password");
            }
        }
    }

    #[test]
    fn secrets_in_the_query_are_hidden_too() {
        let u = CameraUrl::parse("rtsp://cam/stream?user=admin&password=hunter2&channel=1").unwrap();
        assert_eq!(u.to_string(), "rtsp://cam/stream?user=admin&password=***&channel=1");
    }

    #[test]
    fn wrong_urls_are_refused_without_quoting_them() {
        for raw in ["http://u:pw@cam/x", "rtsp://", "not a url pw", "rtsp://u:pw@/path"] {
            let e = CameraUrl::parse(raw).unwrap_err();
            assert!(!e.0.contains("pw"), "{raw}: {e}");
        }
    }

    /// Any user, password, host, path and query a camera URL can hold: the shown form is
    /// exactly the URL with `***@` for the credentials and `***` for secret query values.
    #[test]
    fn any_url_is_shown_with_its_parts_and_without_its_secrets() {
        use proptest::prelude::*;
        let userinfo = "([A-Za-z0-9!$&'()*+,;=._~-]|%[0-9A-F]{2}){1,16}";
        let parts = (
            userinfo,
            userinfo,
            "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5})?",
            1..65535u16,
            "(/[A-Za-z0-9][A-Za-z0-9._~-]{0,7}){0,3}",
            "[a-z]{1,6}",
        );
        proptest!(|((user, pw, host, port, path, value) in parts)| {
            let raw = format!("rtsp://{user}:{pw}@{host}:{port}{path}?channel=1&password={value}");
            let url = CameraUrl::parse(&raw).unwrap();
            // rtsp is not a scheme the URL standard knows: no default port, no path added.
            let expected = format!("rtsp://***@{host}:{port}{path}?channel=1&password=***");
            prop_assert_eq!(url.to_string(), expected.clone());
            prop_assert_eq!(String::from(url.clone()), expected.clone());
            prop_assert_eq!(format!("{url:?}"), format!("CameraUrl({expected})"));
            let plain = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
            prop_assert_eq!(plain(url.url().password().unwrap()), plain(&pw), "the client gets the password");
        });
    }
}
