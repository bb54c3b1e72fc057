//! `gridwatch desk bench`: the desk measured as it runs, a separate process on a private
//! mosquitto. Load: `sites` grid points x `cameras` cameras publish `rate` events per
//! second in all (each a `picture_kb` JPEG-sized picture, then its event), in one-second
//! bursts, for `seconds`. Then: whether every event was stored, the live delay (from an
//! event's publish to its change on `/api/stream`), the desk's CPU and peak RSS; and, with
//! `events` rows stored, how long the wall and history pages take over loopback HTTP.
//!
//! Promises: nothing outside a scratch folder is written; the figures are measured, none
//! is assumed; a run that loses an event says so and exits non-zero.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::store::{Role, Store};
use crate::contract::{EVENT_SCHEMA, EventMessage, EventType, SnapshotRef, hex, timestamp};
use crate::testkit::mosquitto::Mosquitto;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 22)]
    pub sites: usize,
    #[arg(long, default_value_t = 4)]
    pub cameras: usize,
    /// Events per second, all sites together.
    #[arg(long, default_value_t = 100)]
    pub rate: usize,
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Size of each picture.
    #[arg(long, default_value_t = 60)]
    pub picture_kb: usize,
    /// Events stored for the page timings (0: skip them).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Keep the store of the page timings in this folder, and reuse it when it already
    /// holds `events` events (the fill of a million takes many minutes).
    #[arg(long)]
    pub pages_dir: Option<PathBuf>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct BenchReport {
    pub published: usize,
    pub stored: usize,
    pub seconds_to_drain: f64,
    pub live_delay_ms_p50: f64,
    pub live_delay_ms_p99: f64,
    pub live_delay_ms_max: f64,
    pub desk_cpu_percent: f64,
    pub desk_peak_rss_mb: f64,
    pub rows_for_pages: usize,
    pub fill_seconds: f64,
    pub wall_ms_p50: f64,
    pub wall_ms_p99: f64,
    pub history_ms_p50: f64,
    pub history_ms_p99: f64,
    pub history_deep_ms_p99: f64,
    pub history_filtered_ms_p99: f64,
}

const USER: &str = "bench";
const PASSWORD: &str = "bench-password-1";

/// A scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    let scratch = Scratch(std::env::temp_dir().join(format!("gridwatch-desk-bench-{}", std::process::id())));
    let broker = Mosquitto::start()?;
    let mut report = BenchReport::default();
    if args.seconds > 0 {
        let mut desk = DeskChild::start(&scratch.path().join("load"), "load", broker.port())?;
        load(&args, &mut desk, broker.port(), &mut report).await?;
        desk.stop()?;
    }
    if args.events > 0 {
        let dir = args.pages_dir.clone().unwrap_or_else(|| scratch.path().join("pages"));
        let held = stored_events(&dir.join("state"));
        if held >= args.events {
            eprintln!("desk bench: reusing the {held} events stored in {}", dir.display());
            report.rows_for_pages = held;
        } else {
            eprintln!("desk bench: storing {} events for the page timings…", args.events - held);
            let t = Instant::now();
            fill(&dir.join("state"), held, args.events, args.sites, args.cameras)?;
            report.fill_seconds = t.elapsed().as_secs_f64();
            report.rows_for_pages = args.events;
        }
        let desk = DeskChild::start(&dir, "pages", broker.port())?;
        pages(&desk, &mut report)?;
    }
    Ok(report)
}

/// The desk as a child process with its own store under `root/name`.
struct DeskChild {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl DeskChild {
    fn start(dir: &Path, name: &str, broker: u16) -> anyhow::Result<DeskChild> {
        let dir = dir.to_owned();
        std::fs::create_dir_all(dir.join("state"))?;
        let config = dir.join("desk.toml");
        std::fs::write(
            &config,
            format!(
                "[mqtt]\nhost = \"127.0.0.1\"\nport = {broker}\nclient_id = \"desk-bench-{name}\"\n\
                 [web]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"state\"\n"
            ),
        )?;
        Store::open(&dir.join("state"))?.user_add(USER, Role::Operator, PASSWORD)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["desk", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let port = loop {
            let Some(line) = lines.next().transpose()? else { anyhow::bail!("the desk stopped before listening") };
            if let Some(addr) = line.strip_prefix("desk: listening on http://") {
                break addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
            }
        };
        // Keep reading its log, so the desk never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(DeskChild { child, port, dir })
    }

    /// (user + system CPU seconds, peak RSS in MB) from /proc.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().split(' ').next()?.parse().ok());
        (ticks / hz, kb.unwrap_or(0.0) / 1024.0)
    }

    fn stored(&self) -> usize {
        let db = self.dir.join("state/desk.sqlite");
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0)))
            .map_or(0, |n| n as usize)
    }

    /// SIGTERM; a desk that has not stopped 30 s later fails the bench.
    fn stop(&mut self) -> anyhow::Result<()> {
        // SAFETY: kill only sends SIGTERM to our own child, whose pid we hold.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("the desk did not stop within 30 s of SIGTERM")
    }
}

impl Drop for DeskChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends the load and measures it.
async fn load(args: &BenchArgs, desk: &mut DeskChild, broker: u16, report: &mut BenchReport) -> anyhow::Result<()> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let delays: Arc<Mutex<Vec<f64>>> = Arc::default();
    let cookie = login(desk.port)?;
    let (port, s2, d2) = (desk.port, sent.clone(), delays.clone());
    std::thread::spawn(move || watch_stream(port, &cookie, &s2, &d2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, _) = desk.usage();
    let t0 = Instant::now();
    let per_site = args.rate as f64 / args.sites.max(1) as f64;
    let mut tasks = Vec::new();
    for n in 0..args.sites {
        let site = Publisher { site: format!("bench-{n:02}"), cameras: args.cameras, sent: sent.clone() };
        tasks.push(tokio::spawn(site.run(broker, per_site, args.seconds, args.picture_kb * 1000)));
    }
    for t in tasks {
        report.published += t.await??;
    }
    eprintln!(
        "desk bench: {} events published in {:.1} s; waiting for the desk",
        report.published,
        t0.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while desk.stored() < report.published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    report.stored = desk.stored();
    report.seconds_to_drain = (elapsed - args.seconds as f64).max(0.0);
    let (cpu1, rss) = desk.usage();
    report.desk_cpu_percent = (cpu1 - cpu0) / elapsed * 100.0;
    report.desk_peak_rss_mb = rss;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut d = delays.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (report.live_delay_ms_p50, report.live_delay_ms_p99, report.live_delay_ms_max) = percentiles(&mut d);
    Ok(())
}

/// One simulated grid point: `per_s` events a second, sent in a burst each second.
struct Publisher {
    site: String,
    cameras: usize,
    sent: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Publisher {
    async fn run(self, broker: u16, per_s: f64, seconds: u64, picture: usize) -> anyhow::Result<usize> {
        let mut opts = MqttOptions::new(format!("bench-{}", self.site), "127.0.0.1", broker);
        opts.set_max_packet_size(16 << 20, 16 << 20).set_inflight(100).set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 1000);
        let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a2 = acks.clone();
        let poller = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let mut jpeg = vec![0u8; picture];
        rand::Rng::fill(&mut rand::rng(), &mut jpeg[..]);
        let start = tokio::time::Instant::now();
        let (mut seq, mut owed) = (0u64, 0.0);
        for second in 0..seconds {
            tokio::time::sleep_until(start + Duration::from_secs(second)).await;
            owed += per_s;
            while owed >= 1.0 {
                owed -= 1.0;
                seq += 1;
                self.publish(&client, seq, &mut jpeg).await?;
            }
        }
        // Every message acknowledged by the broker before counting it as published.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acks.load(std::sync::atomic::Ordering::Relaxed) < 2 * seq as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        poller.abort();
        Ok(seq as usize)
    }

    async fn publish(&self, client: &AsyncClient, seq: u64, jpeg: &mut [u8]) -> anyhow::Result<()> {
        jpeg[..8].copy_from_slice(&seq.to_le_bytes()); // each picture its own bytes
        let id = ulid::Ulid::new().to_string();
        let topic = format!("gridwatch/{}/snapshots/{id}-1", self.site);
        let sha = hex(&Sha256::digest(&*jpeg));
        client.publish(&topic, QoS::AtLeastOnce, false, jpeg.to_vec()).await?;
        let now = std::time::SystemTime::now();
        let e = EventMessage {
            schema: EVENT_SCHEMA.into(),
            seq,
            event_id: id.clone(),
            event_type: EventType::New,
            kind: if seq.is_multiple_of(20) { "intrusion".into() } else { "object".into() },
            site: self.site.clone(),
            camera: format!("cam-{}", seq as usize % self.cameras.max(1) + 1),
            label: "person".into(),
            score: 0.8,
            bbox: [0.1, 0.1, 0.3, 0.5],
            zones: Vec::new(),
            started_at: timestamp(now),
            at: timestamp(now),
            ended_at: None,
            snapshot: Some(SnapshotRef { topic, sha256: sha, bytes: jpeg.len(), width: 768, height: 576 }),
            detail: None,
            clip: None,
        };
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).insert(format!("{}/{id}", self.site), Instant::now());
        client
            .publish(format!("gridwatch/{}/events", self.site), QoS::AtLeastOnce, false, serde_json::to_vec(&e)?)
            .await?;
        Ok(())
    }
}

/// Reads `/api/stream`; the first change of an event after its event message was
/// published gives that event's live delay.
fn watch_stream(port: u16, cookie: &str, sent: &Mutex<HashMap<String, Instant>>, delays: &Mutex<Vec<f64>>) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return };
    let req = format!("GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return;
    }
    for line in BufReader::new(s).lines().map_while(Result::ok) {
        let Some(data) = line.strip_prefix("data:") else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else { continue };
        if v["type"] != "event" {
            continue;
        }
        let key = format!("{}/{}", v["site"].as_str().unwrap_or(""), v["event_id"].as_str().unwrap_or(""));
        if let Some(t) = sent.lock().unwrap_or_else(|p| p.into_inner()).remove(&key) {
            delays.lock().unwrap_or_else(|p| p.into_inner()).push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
}

/// Logs in over HTTP; the session cookie (`name=value`).
fn login(port: u16) -> anyhow::Result<String> {
    let body = format!("user={USER}&password={PASSWORD}");
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let text = exchange(port, &head)?.0;
    text.lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("login refused"))
}

/// One request on a fresh connection: (response head, seconds until the whole body came).
fn exchange(port: u16, request: &str) -> anyhow::Result<(String, f64)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let took = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.1 303"),
        "{}",
        head.lines().next().unwrap_or("")
    );
    Ok((head, took))
}

/// Events already stored in the store at `dir` (0 when there is none).
fn stored_events(dir: &Path) -> usize {
    let db = dir.join("desk.sqlite");
    if !db.exists() {
        return 0;
    }
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0)))
        .map_or(0, |n| n as usize)
}

/// Stores events `from..n` (the store's own write path, one transaction each) spread over 30
/// days. The fill alone does not wait for the disk (`synchronous = OFF`): only its speed
/// changes, not what is stored or how it is read.
fn fill(dir: &Path, from: usize, n: usize, sites: usize, cameras: usize) -> anyhow::Result<()> {
    let store = Store::open(dir)?;
    store.with(|c| Ok(c.pragma_update(None, "synchronous", "OFF")?))?;
    let start = std::time::SystemTime::now() - Duration::from_secs(30 * 86_400);
    let step = Duration::from_secs(30 * 86_400) / n.max(1) as u32;
    for i in from..n {
        let at = timestamp(start + step * i as u32);
        let site = format!("bench-{:02}", i % sites.max(1));
        let e = EventMessage {
            schema: EVENT_SCHEMA.into(),
            seq: (i / sites.max(1)) as u64 + 1,
            event_id: ulid::Ulid::new().to_string(),
            event_type: EventType::New,
            kind: if i.is_multiple_of(20) { "intrusion".into() } else { "object".into() },
            camera: format!("cam-{}", i % cameras.max(1) + 1),
            site,
            label: if i.is_multiple_of(3) { "car".into() } else { "person".into() },
            score: 0.8,
            bbox: [0.1, 0.1, 0.3, 0.5],
            zones: Vec::new(),
            started_at: at.clone(),
            at,
            ended_at: None,
            snapshot: None,
            detail: None,
            clip: None,
        };
        store.put_event(&e, "{}", i.is_multiple_of(20), None)?;
        if i.is_multiple_of(100_000) && i > 0 {
            eprintln!("desk bench: {i} stored");
        }
    }
    Ok(())
}

/// Times the wall and history pages (each 20 times) on a desk with many rows.
fn pages(desk: &DeskChild, report: &mut BenchReport) -> anyhow::Result<()> {
    let cookie = login(desk.port)?;
    let time = |path: &str| -> anyhow::Result<(f64, f64, f64)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n");
        let mut ms = Vec::new();
        for _ in 0..20 {
            ms.push(exchange(desk.port, &req)?.1 * 1000.0);
        }
        Ok(percentiles(&mut ms))
    };
    (report.wall_ms_p50, report.wall_ms_p99, _) = time("/")?;
    (report.history_ms_p50, report.history_ms_p99, _) = time("/history")?;
    report.history_deep_ms_p99 = time("/history?page=1000")?.1;
    report.history_filtered_ms_p99 = time("/history?site=bench-07&kind=intrusion&label=car")?.1;
    Ok(())
}

/// (p50, p99, max) of `v`, sorted in place; zeros for none.
fn percentiles(v: &mut [f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}
