//! The clip maker: one thread for the site that finishes the recordings whose camera
//! went quiet, muxes every finished clip and stores it with the message that names it.
//! Muxing takes milliseconds (a masked camera's re-encoding, a second or more), so it
//! stays off the decode threads, which must keep up with the cameras.
//!
//! Promises: on `stop`, every job already finished is made and stored before the
//! thread ends (the analysis threads, ending first, store their own last ones).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tracing::error;

use super::pipeline::{Shared, deliver_clip};
use crate::device::clip::CameraClips;
use crate::device::ops::CameraHealth;

/// How often recordings whose camera went quiet are looked for.
const TICK: Duration = Duration::from_millis(250);

pub struct ClipMaker {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl ClipMaker {
    pub fn start(cameras: Vec<Camera>, shared: Arc<Shared>) -> std::io::Result<ClipMaker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("clips".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                make_ready(&cameras, &shared, false);
                std::thread::sleep(TICK);
            }
            make_ready(&cameras, &shared, true);
        })?;
        Ok(ClipMaker { thread, stop })
    }

    /// Makes what is ready and ends the thread.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let joined = tokio::task::spawn_blocking(move || self.thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            error!("the clip maker thread panicked");
        }
    }
}

/// A camera's clips, and its health (which shows the ring).
pub type Camera = (Arc<Mutex<CameraClips>>, Arc<CameraHealth>);

fn make_ready(cameras: &[Camera], shared: &Shared, stopping: bool) {
    let now = SystemTime::now();
    for (clips, health) in cameras {
        let jobs = {
            let mut c = clips.lock().unwrap_or_else(|p| p.into_inner());
            c.tick(now);
            health.set_clip_ring(c.ring_state());
            c.take()
        };
        for job in jobs {
            deliver_clip(job, clips, shared, stopping);
        }
    }
}
