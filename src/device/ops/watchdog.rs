//! Whether the pipeline is making progress, for systemd's watchdog: the daemon pings
//! (`WATCHDOG=1`) only while every enabled camera's stages and the MQTT publisher move
//! or are idle for a good reason, so a wedged pipeline gets restarted.
//!
//! Promises, per camera: a camera that is connecting or reconnecting is progress
//! (ingest has a timeout on every step); while it streams, received frames must keep
//! arriving, received frames must keep turning into pictures, and offered pictures
//! must keep being analysed. The publisher must go round its loop (broker packets,
//! keep-alive pings, reconnect attempts). Limits are generous: a restart is for a
//! stage that stopped, not for a slow one. Outbox writes must not keep failing for
//! more than 5 minutes (a restart reopens the database, and moves it aside if it is
//! damaged).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::contract::CameraState;
use crate::device::ops::live::{Live, Rates};

/// Streaming, but no frame from ingest: ingest drops a session after its stall timeout
/// without frames, so this much longer than that means the stage that reports the
/// stall is stuck.
const RECEIVE_MARGIN: Duration = Duration::from_secs(20);
/// Frames arrive but no picture comes out of the decoder.
const DECODE_LIMIT: Duration = Duration::from_secs(60);
/// Pictures are offered but none is analysed (detection stuck on a frame).
const ANALYSIS_LIMIT: Duration = Duration::from_secs(30);
/// How often the monitor samples, and pings when all is well.
pub const TICK: Duration = Duration::from_secs(2);
/// The window frame rates are measured over.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Outbox writes failing for this long stop the pings.
const OUTBOX_LIMIT: Duration = Duration::from_secs(300);

/// What is wrong when the outbox's writes have failed since `failing_since` for too long.
pub fn outbox_problem(now: Instant, failing_since: Option<Instant>, error: Option<&str>) -> Option<String> {
    let failing = now.saturating_duration_since(failing_since?);
    (failing > OUTBOX_LIMIT)
        .then(|| format!("outbox: writes failing for {}s: {}", failing.as_secs(), error.unwrap_or("unknown error")))
}

/// One camera's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraSample {
    pub state: CameraState,
    pub received: u64,
    pub decoded: u64,
    pub analysed: u64,
}

/// Counter value and when it last changed.
#[derive(Debug, Clone, Copy)]
struct Moved {
    value: u64,
    at: Instant,
}

impl Moved {
    fn update(&mut self, value: u64, now: Instant) {
        if value != self.value {
            *self = Moved { value, at: now };
        }
    }
}

#[derive(Debug)]
struct CameraWatch {
    id: String,
    receive_limit: Duration,
    decode_limit: Duration,
    state: Option<CameraState>,
    received: Moved,
    decoded: Moved,
    analysed: Moved,
}

/// The judgement, fed one sample per camera at a time.
#[derive(Debug)]
pub struct Watchdog {
    cameras: Vec<CameraWatch>,
    publisher_limit: Duration,
    started: Instant,
}

impl Watchdog {
    /// `cameras`: (id, detect_fps, stall timeout) of each enabled camera, in sample
    /// order. `publisher_limit`: longest quiet spell of the MQTT publisher's loop.
    pub fn new(cameras: &[(String, f64, Duration)], publisher_limit: Duration, now: Instant) -> Watchdog {
        let zero = Moved { value: 0, at: now };
        let cameras = cameras
            .iter()
            .map(|(id, fps, stall)| CameraWatch {
                id: id.clone(),
                receive_limit: *stall + RECEIVE_MARGIN,
                // A very low detect_fps hands pictures on rarely: allow a few intervals.
                decode_limit: DECODE_LIMIT.max(Duration::from_secs_f64(4.0 / fps.max(0.001))),
                state: None,
                received: zero,
                decoded: zero,
                analysed: zero,
            })
            .collect();
        Watchdog { cameras, publisher_limit, started: now }
    }

    /// `Ok` while everything moves; otherwise what is stuck, for the log.
    pub fn check(
        &mut self,
        now: Instant,
        samples: &[CameraSample],
        publisher_active: Option<Instant>,
    ) -> Result<(), Stuck> {
        let mut problems = Vec::new();
        for (w, s) in self.cameras.iter_mut().zip(samples) {
            if w.state != Some(s.state) {
                // A new session (or state) starts every clock afresh.
                w.state = Some(s.state);
                w.received = Moved { value: s.received, at: now };
                w.decoded = Moved { value: s.decoded, at: now };
                w.analysed = Moved { value: s.analysed, at: now };
                continue;
            }
            w.received.update(s.received, now);
            w.decoded.update(s.decoded, now);
            w.analysed.update(s.analysed, now);
            if s.state != CameraState::Streaming {
                continue;
            }
            let quiet = |m: Moved| now.saturating_duration_since(m.at);
            if quiet(w.received) > w.receive_limit {
                problems.push(format!(
                    "camera {}: streaming, but no frame received for {}s (ingest or decode thread stuck)",
                    w.id,
                    quiet(w.received).as_secs()
                ));
            } else if w.received.at > w.decoded.at && quiet(w.decoded) > w.decode_limit {
                problems.push(format!(
                    "camera {}: frames arrive, but the decoder has made no picture for {}s",
                    w.id,
                    quiet(w.decoded).as_secs()
                ));
            } else if w.decoded.at > w.analysed.at && quiet(w.analysed) > ANALYSIS_LIMIT {
                problems.push(format!(
                    "camera {}: pictures wait, but analysis has finished none for {}s (detection stuck?)",
                    w.id,
                    quiet(w.analysed).as_secs()
                ));
            }
        }
        let active = publisher_active.unwrap_or(self.started);
        let quiet = now.saturating_duration_since(active);
        if quiet > self.publisher_limit {
            problems.push(format!("MQTT publisher: no activity for {}s", quiet.as_secs()));
        }
        if problems.is_empty() { Ok(()) } else { Err(Stuck(problems)) }
    }
}

/// What does not move, one line per stage, as the log and `status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck(Vec<String>);

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// Samples every camera each [`TICK`]: keeps the frame rates in `live` up to date,
/// and pings systemd's watchdog (when it asked for pings) while [`Watchdog::check`]
/// holds. Logs once when a stage gets stuck and once when it recovers.
pub async fn run(live: Arc<Live>, publisher_limit: Duration, shutdown: CancellationToken) {
    let interval = crate::device::ops::notify::watchdog_interval();
    if let Some(i) = interval {
        info!(period = ?i, "systemd watchdog on: pinging while the pipeline makes progress");
    }
    let enabled: Vec<usize> = (0..live.cameras.len()).filter(|&i| live.cameras[i].enabled).collect();
    let ids: Vec<(String, f64, Duration)> = enabled
        .iter()
        .map(|&i| (live.cameras[i].id.clone(), live.cameras[i].detect_fps, live.cameras[i].stall_timeout))
        .collect();
    let mut dog = Watchdog::new(&ids, publisher_limit, Instant::now());
    let mut history: VecDeque<(Instant, Vec<(u64, u64)>)> = VecDeque::new();
    let mut was_ok = true;
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = Instant::now();
        let counters: Vec<_> = live.cameras.iter().map(|c| (c.health.counters(), c.frames.decoded())).collect();

        let totals: Vec<(u64, u64)> = counters.iter().map(|(h, _)| (h.frames_in, h.frames_analyzed)).collect();
        history.push_back((now, totals.clone()));
        while history.len() > 2 && history.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
            history.pop_front();
        }
        if let Some((t0, first)) = history.front() {
            let secs = now.duration_since(*t0).as_secs_f32();
            let rate = |a: u64, b: u64| {
                if secs > 0.5 { ((b.saturating_sub(a) as f32 / secs) * 10.0).round() / 10.0 } else { 0.0 }
            };
            let rates = first
                .iter()
                .zip(&totals)
                .map(|(a, b)| Rates { fps_in: rate(a.0, b.0), fps_analyzed: rate(a.1, b.1) })
                .collect();
            *live.rates.lock().unwrap_or_else(|p| p.into_inner()) = rates;
        }

        let samples: Vec<CameraSample> = enabled
            .iter()
            .map(|&i| {
                let (h, decoded) = &counters[i];
                CameraSample { state: h.state, received: h.frames_in, decoded: *decoded, analysed: h.frames_analyzed }
            })
            .collect();
        let mut verdict = dog.check(now, &samples, live.link.state().last_activity);
        let outbox = live.outbox.health();
        let failing_since = outbox.failing_since.map(|(_, at)| at);
        if let Some(p) = outbox_problem(now, failing_since, outbox.write_error.as_deref()) {
            let mut stuck = verdict.err().map_or_else(Vec::new, |Stuck(v)| v);
            stuck.push(p);
            verdict = Err(Stuck(stuck));
        }
        match &verdict {
            Ok(()) if !was_ok => info!("pipeline moving again; watchdog pings resumed"),
            Err(problem) if was_ok => {
                let consequence = if interval.is_some() {
                    "systemd will restart gridwatch"
                } else {
                    "no systemd watchdog to act on it"
                };
                error!("pipeline stuck, watchdog pings stopped ({consequence}): {problem}");
            }
            _ => {}
        }
        was_ok = verdict.is_ok();
        if was_ok && interval.is_some() {
            crate::device::ops::notify::watchdog();
        }
        *live.watchdog_problem.lock().unwrap_or_else(|p| p.into_inner()) = verdict.err().map(|s| s.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: CameraState = CameraState::Streaming;

    fn sample(state: CameraState, received: u64, decoded: u64, analysed: u64) -> CameraSample {
        CameraSample { state, received, decoded, analysed }
    }

    /// Runs `steps` ticks of TICK, each sample made by `f(tick)`; returns the verdicts.
    fn run(dog: &mut Watchdog, t0: Instant, ticks: u64, f: impl Fn(u64) -> CameraSample) -> Vec<Result<(), Stuck>> {
        (1..=ticks)
            .map(|k| {
                let now = t0 + TICK * k as u32;
                dog.check(now, &[f(k)], Some(now))
            })
            .collect()
    }

    fn dog(t0: Instant) -> Watchdog {
        Watchdog::new(&[("cam".into(), 5.0, Duration::from_secs(20))], Duration::from_secs(90), t0)
    }

    #[test]
    fn a_moving_pipeline_keeps_the_pings() {
        let t0 = Instant::now();
        let mut d = dog(t0);
        let v = run(&mut d, t0, 100, |k| sample(S, k * 20, k * 10, k * 10));
        assert!(v.iter().all(Result::is_ok), "{v:?}");
    }

    #[test]
    fn analysis_stuck_on_a_frame_stops_the_pings() {
        let t0 = Instant::now();
        let mut d = dog(t0);
        // Analysis moves for 20 ticks, then stops while pictures keep coming.
        let v = run(&mut d, t0, 60, |k| sample(S, k * 20, k * 10, k.min(20) * 10));
        let first_bad = v.iter().position(Result::is_err).expect("stuck analysis must stop the pings");
        // Stuck from tick 20 (40 s); the limit is 30 s: 15 more ticks, give or take one.
        assert!((34..=36).contains(&first_bad), "first failure at tick {first_bad}");
        let msg = v[first_bad].clone().unwrap_err().to_string();
        assert!(msg.contains("camera cam") && msg.contains("analysis"), "{msg}");
        assert!(v[first_bad..].iter().all(Result::is_err), "stays stuck");
    }

    #[test]
    fn a_wedged_decode_thread_stops_the_pings() {
        let t0 = Instant::now();
        let mut d = dog(t0);
        // Nothing counts any more, yet the state still says streaming.
        let v = run(&mut d, t0, 40, |k| sample(S, k.min(5) * 20, k.min(5) * 10, k.min(5) * 10));
        let first_bad = v.iter().position(Result::is_err).expect("a frozen stream must stop the pings");
        assert!(v[first_bad].as_ref().unwrap_err().to_string().contains("no frame received"), "{v:?}");
        // Frozen from tick 5; the stall timeout (20 s) and the margin (20 s) pass first.
        assert!((24..=26).contains(&first_bad), "first failure at tick {first_bad}");
    }

    #[test]
    fn a_long_stall_timeout_is_waited_out() {
        let t0 = Instant::now();
        let mut d = Watchdog::new(&[("cam".into(), 5.0, Duration::from_secs(120))], Duration::from_secs(900), t0);
        // No frame for 130 s: ingest itself has not yet given up on the session.
        let v = run(&mut d, t0, 70, |k| sample(S, k.min(5) * 20, k.min(5) * 10, k.min(5) * 10));
        assert!(v.iter().all(Result::is_ok), "{v:?}");
    }

    #[test]
    fn a_decoder_that_makes_nothing_stops_the_pings() {
        let t0 = Instant::now();
        let mut d = dog(t0);
        let v = run(&mut d, t0, 50, |k| sample(S, k * 20, 10, 10));
        let bad = v
            .iter()
            .find_map(|r| r.clone().err().map(|s| s.to_string()))
            .expect("decoder without output must stop the pings");
        assert!(bad.contains("decoder"), "{bad}");
    }

    #[test]
    fn reconnecting_and_idle_are_progress() {
        let t0 = Instant::now();
        let mut d = dog(t0);
        // A camera that is away for minutes: counters stand still, state reconnecting.
        let v = run(&mut d, t0, 200, |_| sample(CameraState::Reconnecting, 7, 3, 3));
        assert!(v.iter().all(Result::is_ok), "{v:?}");
        // Back streaming: clocks start afresh, no stale verdict.
        let v = run(&mut d, t0 + TICK * 200, 10, |k| sample(S, 7 + k * 20, 3 + k * 10, 3 + k * 10));
        assert!(v.iter().all(Result::is_ok), "{v:?}");
    }

    #[test]
    fn a_silent_publisher_stops_the_pings() {
        let t0 = Instant::now();
        let mut d = Watchdog::new(&[], Duration::from_secs(90), t0);
        assert!(d.check(t0 + Duration::from_secs(60), &[], Some(t0)).is_ok());
        let err = d.check(t0 + Duration::from_secs(91), &[], Some(t0)).unwrap_err().to_string();
        assert!(err.contains("MQTT publisher"), "{err}");
        assert!(d.check(t0 + Duration::from_secs(92), &[], Some(t0 + Duration::from_secs(92))).is_ok());
    }

    #[test]
    fn outbox_writes_failing_for_long_stop_the_pings() {
        let t0 = Instant::now();
        assert_eq!(outbox_problem(t0 + Duration::from_secs(900), None, None), None, "writes work");
        assert_eq!(outbox_problem(t0 + Duration::from_secs(299), Some(t0), Some("disk full")), None, "not yet");
        let p = outbox_problem(t0 + Duration::from_secs(301), Some(t0), Some("disk full")).unwrap();
        assert!(p.contains("outbox") && p.contains("301s") && p.contains("disk full"), "{p}");
    }
}
