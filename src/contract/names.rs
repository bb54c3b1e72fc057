//! Names and times as the contract writes them: ids that become topic levels, RFC 3339
//! UTC times with milliseconds, hex digests.

use std::time::SystemTime;

/// Site, camera and zone ids become MQTT topic levels: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'_' || b == b'-')));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{id}\" is not a valid id: use 1-63 characters a-z, 0-9, '-' or '_', starting with a letter or digit"
        ))
    }
}

/// RFC 3339 UTC with milliseconds, as the contract wants every time.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Lower-case hex, as the contract writes a sha256.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
