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

    /// Starts a broker on `port` (again, after `stop`, to simulate a broker restart).
    pub fn start_on(port: u16) -> anyhow::Result<Mosquitto> {
        let dir = std::env::temp_dir().join(format!("gridwatch-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("mosquitto.conf");
        // `user root`: started as root, mosquitto would switch to its own user, and a
        // change of user clears the death signal set below (it does nothing otherwise).
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nuser root\n"),
        )
        .with_context(|| format!("writing {}", conf.display()))?;
        let bin = binary()?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-c").arg(&conf).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
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
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let mut m = Mosquitto { child: Some(child), port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("mosquitto exited at start ({status}); is port {port} taken?");
            }
            if Instant::now() > deadline {
                bail!("mosquitto did not accept connections on 127.0.0.1:{port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
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
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
