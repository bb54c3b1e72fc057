//! A private mosquitto broker on a free loopback port, for `demo`, `bench` and the
//! tests: the real broker the desk would use, with nothing of the user's touched.
//!
//! Promises: `start` returns once the broker accepts connections; dropping the value
//! stops the broker and removes its folder. The broker never outlives us: it runs in a
//! process group of its own (a terminal's Ctrl-C reaches only gridwatch, which then
//! still needs the broker to deliver its last events) and gets SIGTERM when the thread
//! that started it dies, even by `exit` or SIGKILL, when no destructor runs.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    conf: PathBuf,
    options: BrokerOptions,
}

/// What the broker offers beyond a plain anonymous listener on loopback.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Keep sessions and queued messages across `restart` (a persistent subscriber
    /// then misses nothing while the broker is down).
    pub persistent: bool,
    /// A second listener, with TLS.
    pub tls: Option<TlsListener>,
}

/// Logins and topic rights (mosquitto's `password_file` and `acl_file`), kept apart from
/// [`BrokerOptions`] so that its struct literals elsewhere stay valid.
#[derive(Debug, Clone)]
pub struct BrokerAccess {
    /// Made by `mosquitto_passwd` (see [`write_password_file`]); anonymous clients are
    /// then refused.
    pub password_file: PathBuf,
    /// Who may read and write which topics; `None`: every user may do everything.
    pub acl_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TlsListener {
    pub port: u16,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Ask clients for a certificate signed by `ca_file`.
    pub require_certificate: bool,
}

/// Writes a mosquitto password file at `path` holding `users` (name, password), with
/// the broker's own `mosquitto_passwd`.
pub fn write_password_file(path: &Path, users: &[(&str, &str)]) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .arg("-b")
            .arg(path)
            .arg(user)
            .arg(password)
            .stdin(Stdio::null())
            .output()
            .context("running mosquitto_passwd (apt-get install mosquitto)")?;
        if !out.status.success() {
            bail!("mosquitto_passwd for {user}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn binary() -> anyhow::Result<PathBuf> {
    let candidates = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"];
    if let Some(p) = candidates.iter().map(Path::new).find(|p| p.is_file()) {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
    {
        return Ok(p);
    }
    bail!(
        "mosquitto is not installed (looked in {} and $PATH): run ./scripts/setup.sh, or apt-get install mosquitto",
        candidates.join(", ")
    )
}

impl Mosquitto {
    /// Starts a broker on a free port.
    pub fn start() -> anyhow::Result<Mosquitto> {
        Mosquitto::start_on(free_port().context("no free loopback port")?)
    }

    /// Starts a broker on `port`.
    pub fn start_on(port: u16) -> anyhow::Result<Mosquitto> {
        Mosquitto::start_with(port, BrokerOptions::default())
    }

    pub fn start_with(port: u16, options: BrokerOptions) -> anyhow::Result<Mosquitto> {
        Mosquitto::start_with_access(port, options, None)
    }

    /// Starts a broker that checks logins and topic rights (`access`), or lets anyone
    /// do anything (`None`).
    pub fn start_with_access(
        port: u16,
        options: BrokerOptions,
        access: Option<BrokerAccess>,
    ) -> anyhow::Result<Mosquitto> {
        let dir = std::env::temp_dir().join(format!("gridwatch-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("mosquitto.conf");
        // `user root`: started as root, mosquitto would switch to its own user, and a
        // change of user clears the death signal set below (it does nothing otherwise).
        let mut text = String::from("per_listener_settings false\nlog_dest none\nuser root\n");
        match &access {
            None => text += "allow_anonymous true\n",
            Some(a) => {
                text += &format!("allow_anonymous false\npassword_file {}\n", a.password_file.display());
                if let Some(acl) = &a.acl_file {
                    text += &format!("acl_file {}\n", acl.display());
                }
            }
        }
        if options.persistent {
            // Saved at a clean stop (`restart`, `terminate`); a queue without bound,
            // so a subscriber that is away misses nothing.
            text += &format!("persistence true\npersistence_location {}/\nmax_queued_messages 0\n", dir.display());
        } else {
            text += "persistence false\n";
        }
        text += &format!("listener {port} 127.0.0.1\n");
        if let Some(t) = &options.tls {
            text += &format!(
                "listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                t.port,
                t.ca_file.display(),
                t.cert_file.display(),
                t.key_file.display(),
                t.require_certificate
            );
        }
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        let mut m = Mosquitto { child: None, port, dir, conf, options };
        m.spawn()?;
        Ok(m)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = binary()?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-c").arg(&self.conf).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd.process_group(0);
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and calls only prctl and
        // getppid, both async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // Linux sends it when the spawning *thread* ends: start the broker on
                // a thread that lives as long as the value (`demo` and the tests do).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().with_context(|| format!("starting {}", bin.display()))?);
        let ports = [Some(self.port), self.options.tls.as_ref().map(|t| t.port)];
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in ports.into_iter().flatten() {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    bail!(
                        "mosquitto exited at start ({status}); is port {port} taken? (config: {})",
                        self.conf.display()
                    );
                }
                if Instant::now() > deadline {
                    bail!("mosquitto did not accept connections on 127.0.0.1:{port} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the broker (SIGKILL: like a crash or a pulled cable, nothing flushed).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the broker the way an administrator would (SIGTERM): a persistent broker
    /// saves its sessions and queues.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill only sends a signal, to our own child whose pid we hold.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Starts the broker again, on the same ports with the same state, after
    /// `stop` or `terminate` (from the thread that should own its lifetime).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.terminate();
        self.spawn()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
