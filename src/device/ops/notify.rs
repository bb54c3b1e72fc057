//! systemd's readiness and watchdog protocol (sd_notify(3)), without libsystemd: one
//! datagram per message to the socket named in `$NOTIFY_SOCKET`.
//!
//! Promises: every function is a no-op (returning false) when not started by systemd
//! with `Type=notify`; none blocks or panics; a failed send is logged once per kind.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where the messages go: `$NOTIFY_SOCKET`, a path or '@' and an abstract name.
fn socket_addr(raw: &std::ffi::OsStr) -> Option<std::os::unix::net::SocketAddr> {
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(raw);
    match bytes.split_first() {
        // A leading '@' names a socket in the abstract namespace.
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name).ok()
        }
        Some((b'/', _)) => std::os::unix::net::SocketAddr::from_pathname(PathBuf::from(raw)).ok(),
        _ => None,
    }
}

/// Sends one message (`KEY=VALUE` lines); false when there is nobody to tell.
pub fn send(message: &str) -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|raw| send_to(&raw, message))
}

fn send_to(raw: &std::ffi::OsStr, message: &str) -> bool {
    let Some(addr) = socket_addr(raw) else {
        return false;
    };
    let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(message.as_bytes(), &addr));
    if let Err(e) = &sent {
        let kind = message.split('=').next().unwrap_or_default();
        tracing::warn!("cannot tell systemd {kind}: {e}");
    }
    sent.is_ok()
}

/// Startup is complete: the cameras are started and the control socket answers.
pub fn ready(status: &str) -> bool {
    send(&format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id()))
}

/// A clean stop has begun.
pub fn stopping() -> bool {
    send("STOPPING=1\nSTATUS=stopping: ending open events")
}

/// A free-form line `systemctl status` shows.
pub fn status(status: &str) -> bool {
    send(&format!("STATUS={status}"))
}

/// The pipeline made progress since the last ping.
pub fn watchdog() -> bool {
    send("WATCHDOG=1")
}

/// systemd's watchdog period, when it expects pings from this process
/// (`WatchdogSec=`; `$WATCHDOG_PID`, when set, must be ours).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
    )
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_needs_our_pid() {
        let me = std::process::id().to_string();
        assert_eq!(watchdog_interval_from(Some("30000000"), Some(&me)), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_interval_from(Some("30000000"), None), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("1")), None, "another process's watchdog");
        assert_eq!(watchdog_interval_from(Some("0"), None), None);
        assert_eq!(watchdog_interval_from(None, None), None);
    }

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("gridwatch-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        assert!(send_to(path.as_os_str(), "READY=1\nSTATUS=2 cameras"));
        assert!(send_to(path.as_os_str(), "WATCHDOG=1"));
        assert!(!send_to(std::ffi::OsStr::new("relative/path"), "WATCHDOG=1"), "not a socket address");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(first, "READY=1\nSTATUS=2 cameras");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
