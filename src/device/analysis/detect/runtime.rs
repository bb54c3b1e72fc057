//! Finding and starting ONNX Runtime, which `ort` loads at run time (load-dynamic).
//!
//! Promises: never panics; the library is looked for in a fixed order and loaded at
//! most once per process, every later call returning the first call's outcome; a
//! failure lists every place tried, why each failed, and how to fix it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

/// The file name the library is installed under.
const LIB_NAME: &str = "libonnxruntime.so";

/// ONNX Runtime could not be loaded from anywhere.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "cannot load ONNX Runtime ({LIB_NAME}, version 1.{} or newer); tried:\n{}\nto fix: run ./scripts/setup.sh \
     (installs the pinned {LIB_NAME} into /usr/local/lib/gridwatch), or set ORT_DYLIB_PATH",
    ort::MINOR_VERSION,
    list(.attempts)
)]
pub struct RuntimeError {
    /// (place, why it failed), in the order tried.
    pub attempts: Vec<(String, String)>,
}

fn list(attempts: &[(String, String)]) -> String {
    let lines: Vec<String> = attempts.iter().map(|(place, why)| format!("  - {place}: {why}")).collect();
    lines.join("\n")
}

static RUNTIME: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();

/// Loads ONNX Runtime and creates the process's environment, on the first call only.
///
/// Looks, in order: `explicit` (a file, or a folder holding `libonnxruntime.so`),
/// `$ORT_DYLIB_PATH`, the executable's folder, `<exe_dir>/../lib/gridwatch/`,
/// `/usr/lib/gridwatch/`, `/usr/local/lib/gridwatch/`, then the dynamic linker's
/// search path. Later calls return the first outcome whatever `explicit` they pass:
/// a process can hold only one ONNX Runtime.
pub fn init(explicit: Option<&Path>) -> Result<Environment, RuntimeError> {
    RUNTIME.get_or_init(|| load(explicit)).clone()
}

fn load(explicit: Option<&Path>) -> Result<Environment, RuntimeError> {
    let mut attempts = Vec::new();
    for (origin, path) in candidates(explicit) {
        let place = format!("{} ({origin})", path.display());
        // The bare name is resolved by dlopen, so only trying it can tell whether it exists.
        let is_bare_name = path.as_os_str() == LIB_NAME;
        if !is_bare_name && !path.is_file() {
            attempts.push((place, "no such file".to_owned()));
            continue;
        }
        // `ort` resolves a relative name against the executable's folder and panics
        // when that folder is unknown; without it only absolute paths are safe.
        if is_bare_name && std::env::current_exe().is_err() {
            attempts.push((place, "skipped: the executable's own path is unknown".to_owned()));
            continue;
        }
        match ort::init_from(&path) {
            Ok(builder) => {
                return builder.with_name("gridwatch").build().map_err(|e| {
                    attempts.push((place, format!("loaded, but creating the runtime environment failed: {e}")));
                    RuntimeError { attempts }
                });
            }
            Err(e) => attempts.push((place, describe(&e))),
        }
    }
    Err(RuntimeError { attempts })
}

/// `ort`'s message for a failed dlopen is only "dlopen failed"; the reason the
/// dynamic linker gave (missing file, wrong architecture, missing dependency) is
/// in the error's source.
fn describe(e: &ort::LoadDynamicError) -> String {
    use std::error::Error;
    match e {
        ort::LoadDynamicError::Dlopen { error, .. } => match error.source() {
            Some(why) => format!("cannot load it: {why}"),
            None => format!("cannot load it: {error}"),
        },
        other => other.to_string(),
    }
}

/// Every place to look, in order, with where the idea came from.
fn candidates(explicit: Option<&Path>) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        let file = if p.is_dir() { p.join(LIB_NAME) } else { p.to_owned() };
        out.push(("from the configuration", file));
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(("from ORT_DYLIB_PATH", PathBuf::from(p)));
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_owned)) {
        out.push(("next to the executable", dir.join(LIB_NAME)));
        out.push(("installed beside the executable", dir.join("../lib/gridwatch").join(LIB_NAME)));
    }
    out.push(("system install", PathBuf::from("/usr/lib/gridwatch").join(LIB_NAME)));
    out.push(("installed by scripts/setup.sh", PathBuf::from("/usr/local/lib/gridwatch").join(LIB_NAME)));
    out.push(("dynamic linker search path", PathBuf::from(LIB_NAME)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_the_documented_order() {
        let c = candidates(Some(Path::new("/opt/ort/libonnxruntime.so")));
        assert_eq!(c[0].1, PathBuf::from("/opt/ort/libonnxruntime.so"));
        let tail: Vec<&Path> = c.iter().rev().take(3).map(|(_, p)| p.as_path()).collect();
        assert_eq!(
            tail,
            [
                Path::new(LIB_NAME),
                Path::new("/usr/local/lib/gridwatch/libonnxruntime.so"),
                Path::new("/usr/lib/gridwatch/libonnxruntime.so")
            ]
        );
    }

    #[test]
    fn error_lists_every_attempt_and_ends_with_the_fix() {
        let e = RuntimeError {
            attempts: vec![("/a (x)".into(), "no such file".into()), ("/b (y)".into(), "too old".into())],
        };
        let msg = e.to_string();
        assert!(msg.contains("  - /a (x): no such file\n  - /b (y): too old"), "{msg}");
        assert!(msg.ends_with("or set ORT_DYLIB_PATH"), "{msg}");
    }
}
