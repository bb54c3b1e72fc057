//! `gridwatch snapshot CAMERA -o FILE`: the latest picture a running daemon decoded
//! from a camera, as JPEG (encoded by the daemon the way event snapshots are).

use std::path::PathBuf;
use std::process::ExitCode;

use super::status::{SocketArgs, client_error};
use crate::device::ops::control::{self, Request, SnapshotHeader};

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// The camera's id, as in the configuration.
    pub camera: String,
    /// Where to write the JPEG.
    #[arg(long, short)]
    pub output: PathBuf,
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Print what was saved as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let socket = args.socket.socket();
    let (answer, jpeg) = match control::request(&socket, &Request::Snapshot { camera: args.camera.clone() }) {
        Ok(a) => a,
        Err(e) => return Ok(client_error(&e)),
    };
    let header: SnapshotHeader = serde_json::from_value(answer)?;
    std::fs::write(&args.output, &jpeg)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the picture: {e}", args.output.display()))?;
    if args.json {
        let v = serde_json::json!({
            "camera": header.camera,
            "captured_at": header.captured_at,
            "width": header.width,
            "height": header.height,
            "bytes": header.bytes,
            "file": args.output,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: {}x{} picture captured at {}, {} bytes, saved to {}",
            header.camera,
            header.width,
            header.height,
            header.captured_at,
            header.bytes,
            args.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
