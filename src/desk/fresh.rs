//! Fresh pictures asked for from the site page (contract 1.1: a JSON request on
//! `{root}/{site}/{camera}/snapshot/request`, the JPEG back on
//! `{root}/{site}/{camera}/snapshot/{request_id}`).
//!
//! Promises: only a picture this desk asked for (within the last minute, for that site
//! and camera) is taken; it is held in memory only, the latest per camera, for 10
//! minutes, never written to disk; pictures over 8 MiB or not starting like a JPEG are
//! refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a request waits for its picture.
const ASK_FOR: Duration = Duration::from_secs(60);
/// How long a picture that came is kept.
const KEEP_FOR: Duration = Duration::from_secs(600);
const MAX_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreshRefusal {
    #[error("a picture this desk did not ask for (or asked for over a minute ago)")]
    NotAsked,
    #[error("the picture is over 8 MiB")]
    TooBig,
    #[error("the picture is not a JPEG")]
    NotJpeg,
}

/// A picture that came back.
#[derive(Clone)]
pub struct FreshPicture {
    pub request_id: String,
    pub bytes: Arc<Vec<u8>>,
    /// RFC 3339 UTC, when the desk got it.
    pub received_at: String,
    at: Instant,
}

struct Asked {
    site: String,
    camera: String,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    asked: HashMap<String, Asked>,
    pictures: HashMap<(String, String), FreshPicture>,
}

#[derive(Default)]
pub struct Fresh {
    inner: Mutex<Inner>,
}

impl Fresh {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.asked.retain(|_, a| a.at.elapsed() < ASK_FOR);
        g.pictures.retain(|_, p| p.at.elapsed() < KEEP_FOR);
        g
    }

    /// A request was published for `site`/`camera`.
    pub fn asked(&self, site: &str, camera: &str, request_id: &str) {
        let a = Asked { site: site.to_owned(), camera: camera.to_owned(), at: Instant::now() };
        self.lock().asked.insert(request_id.to_owned(), a);
    }

    /// A picture came on `…/{camera}/snapshot/{request_id}`.
    pub fn arrived(&self, site: &str, camera: &str, request_id: &str, bytes: &[u8]) -> Result<(), FreshRefusal> {
        let mut g = self.lock();
        if !g.asked.get(request_id).is_some_and(|a| a.site == site && a.camera == camera) {
            return Err(FreshRefusal::NotAsked);
        }
        if bytes.len() > MAX_BYTES {
            return Err(FreshRefusal::TooBig);
        }
        if !bytes.starts_with(&[0xff, 0xd8]) {
            return Err(FreshRefusal::NotJpeg);
        }
        g.asked.remove(request_id);
        let p = FreshPicture {
            request_id: request_id.to_owned(),
            bytes: Arc::new(bytes.to_vec()),
            received_at: super::store::rfc3339(super::store::now_ms()),
            at: Instant::now(),
        };
        g.pictures.insert((site.to_owned(), camera.to_owned()), p);
        Ok(())
    }

    /// The camera's latest fresh picture, while kept.
    pub fn picture(&self, site: &str, camera: &str) -> Option<FreshPicture> {
        self.lock().pictures.get(&(site.to_owned(), camera.to_owned())).cloned()
    }

    /// Whether a request for the camera still waits for its picture.
    pub fn waiting(&self, site: &str, camera: &str) -> bool {
        self.lock().asked.values().any(|a| a.site == site && a.camera == camera)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_asked_for_jpeg_is_kept_for_its_camera() {
        let f = Fresh::default();
        let jpeg = [0xff, 0xd8, 0xff, 0xe0, 1, 2, 3];
        assert_eq!(f.arrived("s", "c", "r1", &jpeg), Err(FreshRefusal::NotAsked));
        f.asked("s", "c", "r1");
        assert!(f.waiting("s", "c"));
        assert_eq!(f.arrived("s", "other", "r1", &jpeg), Err(FreshRefusal::NotAsked), "another camera");
        assert_eq!(f.arrived("s", "c", "r1", b"<html>"), Err(FreshRefusal::NotJpeg));
        assert!(f.picture("s", "c").is_none());
        f.arrived("s", "c", "r1", &jpeg).unwrap();
        assert!(!f.waiting("s", "c"));
        let p = f.picture("s", "c").unwrap();
        assert_eq!((p.request_id.as_str(), p.bytes.as_slice()), ("r1", &jpeg[..]));
        assert_eq!(f.arrived("s", "c", "r1", &jpeg), Err(FreshRefusal::NotAsked), "answered once");
        assert!(f.picture("s", "d").is_none());
    }
}
