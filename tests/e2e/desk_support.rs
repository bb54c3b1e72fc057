//! What the desk's tests need: the desk and the simulator as processes, a small HTTP
//! client (std only) with the desk's login, a publisher of hand-made contract
//! messages, and a WebDriver client for headless Chromium.

#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use crate::support::BIN;

pub const PASSWORD: &str = "desk-Pw-0123";

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the desk");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // Read until the body is complete: some servers (chromedriver) keep the connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if complete(&raw) {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse(&raw)
}

/// Whether `raw` holds a whole response (by Content-Length, or the last chunk).
fn complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = raw.len() - split - 4;
    if let Some(n) =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body >= n;
    }
    head.contains("transfer-encoding: chunked") && raw.ends_with(b"0\r\n\r\n")
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Resp { status, headers, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
    out
}

/// `GET /api/stream` left open: the connection, once the response head has come.
pub fn open_stream(port: u16, cookie: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = format!("GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the stream answers");
    s
}

/// A logged-in client: its session cookie and CSRF token.
pub struct Session {
    pub port: u16,
    pub cookie: String,
    pub csrf: String,
}

/// POSTs the login form; the response as it came.
pub fn login_raw(port: u16, user: &str, password: &str) -> Resp {
    let body = format!("user={user}&password={password}");
    http(port, "POST", "/login", &[("Content-Type", "application/x-www-form-urlencoded")], body.as_bytes())
}

impl Session {
    pub fn login(port: u16, user: &str, password: &str) -> Session {
        let r = login_raw(port, user, password);
        let cookie = r.header("set-cookie").unwrap_or_else(|| panic!("login of {user} refused: {}", r.status));
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let mut s = Session { port, cookie, csrf: String::new() };
        s.csrf = s.get("/api/session").json()["csrf_token"].as_str().unwrap().to_owned();
        s
    }

    pub fn get(&self, path: &str) -> Resp {
        http(self.port, "GET", path, &[("Cookie", &self.cookie)], b"")
    }

    /// A POST with the session's CSRF token.
    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        let b = body.to_string();
        http(
            self.port,
            "POST",
            path,
            &[("Cookie", &self.cookie), ("X-CSRF-Token", &self.csrf), ("Content-Type", "application/json")],
            b.as_bytes(),
        )
    }
}

/// `gridwatch desk` as a child process on a free port, its log in a file.
pub struct DeskProc {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    /// One log file per start, in order.
    logs: Vec<PathBuf>,
}

/// A desk.toml for `broker_port`; `extra` is appended (e.g. `[[sites]]` tables).
pub fn desk_config(dir: &Path, broker_port: u16, extra: &str) -> PathBuf {
    let text = format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\nclient_id = \"desk-e2e\"\nkeep_alive_s = 5\n\
         [web]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"state\"\n{extra}"
    );
    let path = dir.join("desk.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn add_user(config: &Path, name: &str, role: &str) {
    let mut c = Command::new(BIN)
        .args(["desk", "user", "add", name, "--role", role, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "desk user add {name}");
}

impl DeskProc {
    pub fn start(dir: &Path, config: &Path) -> DeskProc {
        let mut d = DeskProc { child: None, dir: dir.to_owned(), config: config.to_owned(), port: 0, logs: Vec::new() };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.dir.join(format!("desk-{n}.log"));
        self.logs.push(log.clone());
        let child = Command::new(BIN)
            .args(["desk", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start gridwatch desk");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("desk: listening on http://")) {
                self.port = addr.rsplit(':').next().unwrap().trim().parse().unwrap();
                return;
            }
            assert!(Instant::now() < deadline, "the desk did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything this desk has logged, over all its starts.
    pub fn log(&self) -> String {
        self.logs.iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect()
    }

    /// SIGTERM, then how long it took to exit (None: still running after `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<Duration> {
        let child = self.child.as_mut()?;
        let t = Instant::now();
        // SAFETY: kill only sends SIGTERM to our own child, whose pid we hold.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_for(within, || child.try_wait().ok().flatten().map(|_| t.elapsed()))
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.dir.join("state/desk.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }
}

impl Drop for DeskProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `gridwatch desk simulate` as a child process.
pub struct Sim {
    pub child: Child,
}

impl Sim {
    pub fn start(broker_port: u16, args: &[&str]) -> Sim {
        let child = Command::new(BIN)
            .args(["desk", "simulate", "--broker", &format!("127.0.0.1:{broker_port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulator");
        Sim { child }
    }

    pub fn signal(&mut self, sig: i32) {
        // SAFETY: kill only sends a signal, to our own child whose pid we hold.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, then waits for the clean stop.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device stand-in that publishes hand-made messages and waits for each PUBACK.
pub struct Publisher {
    client: Client,
    acks: std::sync::mpsc::Receiver<()>,
}

impl Publisher {
    pub fn connect(port: u16, id: &str) -> Publisher {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut conn) = Client::new(opts, 16);
        let (tx, acks) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Publisher { client, acks }
    }

    /// Publishes at QoS 1 and returns when the broker acknowledged it.
    pub fn send(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Instant {
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload).unwrap();
        self.acks.recv_timeout(Duration::from_secs(10)).expect("PUBACK");
        Instant::now()
    }

    /// An event message (with a picture published first unless `end`); returns the PUBACK time.
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &self,
        site: &str,
        seq: u64,
        id: &str,
        ty: &str,
        kind: &str,
        label: &str,
        zones: &[&str],
        detail: Option<Value>,
    ) -> Instant {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let snapshot = if ty == "end" {
            Value::Null
        } else {
            let jpeg = std::fs::read(crate::support::fixture("photos/darknet_person.jpg")).unwrap();
            let topic = format!("gridwatch/{site}/snapshots/{id}-{seq}");
            self.send(&topic, jpeg.clone(), false);
            json!({"topic": topic, "sha256": hex_sha(&jpeg), "bytes": jpeg.len(), "width": 768, "height": 576})
        };
        let mut e = json!({
            "schema": "gridwatch.event/1", "seq": seq, "event_id": id, "type": ty, "kind": kind, "site": site,
            "camera": "gate", "label": label, "score": 0.8, "box": [0.1, 0.1, 0.3, 0.5], "zones": zones,
            "started_at": "2026-11-30T08:00:00.000Z", "at": now,
            "ended_at": if ty == "end" { json!("2026-11-30T08:01:05.000Z") } else { Value::Null },
            "snapshot": snapshot,
        });
        if let Some(d) = detail {
            e["detail"] = d;
        }
        self.send(&format!("gridwatch/{site}/events"), e.to_string().into_bytes(), false)
    }
}

pub fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Polls `f` every 100 ms until it returns Some, or `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Headless Chromium driven through chromedriver (WebDriver over HTTP).
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Fails the test, saying what to install, when Chromium or chromedriver is missing.
    pub fn start(scratch: &Path) -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(Path::new(bin).exists(), "{bin} is missing: run ./scripts/setup.sh (chromium chromium-driver)");
        }
        let port = gridwatch::testkit::mosquitto::free_port().unwrap();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).ok()).expect("chromedriver up");
        let profile = scratch.join("chromium-profile");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1920,1080",
                     "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                     format!("--user-data-dir={}", profile.display())]}}}});
        let r = http(port, "POST", "/session", &[("Content-Type", "application/json")], caps.to_string().as_bytes());
        let session = r.json()["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver session: {}", r.text()))
            .to_owned();
        Browser { driver, port, session, profile }
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.try_call(method, path, body).unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// A WebDriver command: its value, or the driver's error text.
    fn try_call(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        // A GET carries no body: chromedriver reads even "null" as missing parameters.
        let b = if method == "GET" { String::new() } else { body.to_string() };
        let r = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            &[("Content-Type", "application/json")],
            b.as_bytes(),
        );
        if r.status != 200 {
            return Err(r.text());
        }
        Ok(r.json()["value"].clone())
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", &json!({"url": url}));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub fn js(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", &json!({"script": script, "args": []}))
    }

    pub fn find(&self, css: &str) -> String {
        let v = self.call("POST", "/element", &json!({"using": "css selector", "value": css}));
        v.as_object().and_then(|o| o.values().next()).and_then(|v| v.as_str()).unwrap().to_owned()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/value"), &json!({"text": text}));
    }

    /// Clicks the element `css` selects. The live views replace their HTML when the desk
    /// announces a change, so an element found a moment before may be gone: find it again.
    pub fn click(&self, css: &str) {
        for _ in 0..5 {
            let e = self.find(css);
            match self.try_call("POST", &format!("/element/{e}/click"), &json!({})) {
                Ok(_) => return,
                Err(e) if e.contains("stale element") => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("click {css}: {e}"),
            }
        }
        panic!("click {css}: the element was replaced five times in a row");
    }

    /// Sets the browser window's outer size.
    pub fn resize(&self, width: u32, height: u32) {
        self.call("POST", "/window/rect", &json!({"width": width, "height": height}));
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self, to: &Path) {
        let b64 = self.call("GET", "/screenshot", &Value::Null);
        std::fs::write(to, base64_decode(b64.as_str().unwrap())).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), &[], b"");
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| acc | (val(*c) as u32) << (18 - 6 * i));
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

/// Lines of a simulator's `--log`: (site, seq).
pub fn logged(path: &Path) -> Vec<(String, i64)> {
    let f = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let mut it = l.split(' ');
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// A test client that records what it receives on its topic filters: (topic, payload,
/// retain flag), in order.
pub struct Subscriber {
    client: Client,
    got: std::sync::mpsc::Receiver<(String, Vec<u8>, bool)>,
}

impl Subscriber {
    /// Connects and subscribes (QoS 1); returns once the broker granted the subscriptions.
    pub fn connect(port: u16, id: &str, filters: &[&str]) -> Subscriber {
        let opts = MqttOptions::new(id, "127.0.0.1", port);
        let (client, mut conn) = Client::new(opts, 64);
        let (tx, got) = std::sync::mpsc::channel();
        let (subbed_tx, subbed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec(), p.retain)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subbed_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).unwrap();
            subbed.recv_timeout(Duration::from_secs(10)).expect("SUBACK");
        }
        Subscriber { client, got }
    }

    /// The next message on `topic` within `timeout` (others are skipped): (payload, retain).
    pub fn next_on(&self, topic: &str, timeout: Duration) -> Option<(Vec<u8>, bool)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.got.recv_timeout(left) {
                Ok((t, p, r)) if t == topic => return Some((p, r)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Everything received within `wait`: (topic, payload, retain).
    pub fn drain(&self, wait: Duration) -> Vec<(String, Vec<u8>, bool)> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.got.recv_timeout(left) {
                Ok(m) => out.push(m),
                Err(_) => break,
            }
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}
