//! `gridwatch serve`: plays video files as RTSP cameras on 127.0.0.1, so a technician
//! can test a setup without a camera. Each file is served in a loop at
//! `rtsp://127.0.0.1:PORT/<file stem>` (the file name where stems collide) until Ctrl-C.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::testkit::rtsp_server::RtspServer;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Annex-B H.264 or H.265 files (*.h264, *.h265), e.g. tests/fixtures/video/vtest.h264
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// TCP port to listen on (127.0.0.1 only)
    #[arg(long, default_value_t = 8554)]
    pub port: u16,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let paths = mount_paths(&args.files)?;
    let mounts: Vec<(&str, &Path)> =
        paths.iter().map(String::as_str).zip(args.files.iter().map(PathBuf::as_path)).collect();
    let server = RtspServer::start(args.port, &mounts)?;
    for path in &paths {
        println!("{}", server.url(path));
    }
    println!("serving until Ctrl-C");

    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_io().build().context("starting the signal handler")?;
    runtime.block_on(tokio::signal::ctrl_c()).context("waiting for Ctrl-C")?;
    server.stop();
    Ok(ExitCode::SUCCESS)
}

/// `/<file stem>` for each file, or `/<file name>` where stems collide (`vtest.h264` and
/// `vtest.h265` become `/vtest.h264` and `/vtest.h265`).
fn mount_paths(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let name = |file: &Path, part: Option<&OsStr>| {
        part.and_then(OsStr::to_str)
            .map(|s| format!("/{s}"))
            .with_context(|| format!("{}: cannot name a mount after this file", file.display()))
    };
    let stems = files.iter().map(|f| name(f, f.file_stem())).collect::<anyhow::Result<Vec<_>>>()?;
    let mut paths = Vec::with_capacity(files.len());
    for (file, stem) in files.iter().zip(&stems) {
        let path =
            if stems.iter().filter(|s| *s == stem).count() > 1 { name(file, file.file_name())? } else { stem.clone() };
        if paths.contains(&path) {
            bail!("two files would both be served at {path}; rename one of them");
        }
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_named_after_files() {
        let files: Vec<PathBuf> = ["a/vtest.h264", "b/vtest.h265", "c/yard.h264"].iter().map(PathBuf::from).collect();
        assert_eq!(mount_paths(&files).unwrap(), ["/vtest.h264", "/vtest.h265", "/yard"]);
        let clash: Vec<PathBuf> = ["a/x.h264", "b/x.h264"].iter().map(PathBuf::from).collect();
        assert!(mount_paths(&clash).is_err());
    }
}
