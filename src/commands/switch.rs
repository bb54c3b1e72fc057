//! `gridwatch pause CAMERA`, `resume CAMERA` and `rule CAMERA ZONE RULE on|off`: the
//! desk's switches, from the technician's shell, through the running daemon's control
//! socket. The daemon applies, stores and announces them as it does the desk's.

use std::process::ExitCode;

use super::status::{SocketArgs, client_error};
use crate::device::ops::control::{self, Request};

#[derive(Debug, clap::Args)]
pub struct CameraSwitchArgs {
    /// The camera's id, as in the configuration.
    pub camera: String,
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RuleArgs {
    /// The camera's id.
    pub camera: String,
    /// The zone's name.
    pub zone: String,
    /// The rule's kind: intrusion, loitering, crowd, occupation or abandoned.
    pub rule: String,
    /// Armed (`on`) or disarmed (`off`).
    #[arg(value_parser = ["on", "off"])]
    pub state: String,
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn pause(a: CameraSwitchArgs) -> anyhow::Result<ExitCode> {
    ask(&a.socket, &Request::Pause { camera: a.camera }, a.json)
}

pub fn resume(a: CameraSwitchArgs) -> anyhow::Result<ExitCode> {
    ask(&a.socket, &Request::Resume { camera: a.camera }, a.json)
}

pub fn rule(a: RuleArgs) -> anyhow::Result<ExitCode> {
    let req = Request::Rule { camera: a.camera, zone: a.zone, rule: a.rule, on: a.state == "on" };
    ask(&a.socket, &req, a.json)
}

fn ask(socket: &SocketArgs, req: &Request, json: bool) -> anyhow::Result<ExitCode> {
    let (mut answer, _) = match control::request(&socket.socket(), req) {
        Ok(a) => a,
        Err(e) => return Ok(client_error(&e)),
    };
    if let Some(o) = answer.as_object_mut() {
        o.remove("ok");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let field = |k: &str| answer[k].as_str().unwrap_or("?").to_owned();
    let (camera, what, state) = (field("camera"), field("switch"), field("state"));
    let what = match (what.as_str(), state.as_str()) {
        ("detect", "ON") => "detection on".to_owned(),
        ("detect", _) => "detection off (paused)".to_owned(),
        (rule, "ON") => format!("rule {rule} armed"),
        (rule, _) => format!("rule {rule} disarmed"),
    };
    let already = if answer["changed"] == false { " (it already was)" } else { "" };
    println!("{camera}: {what}{already}");
    Ok(ExitCode::SUCCESS)
}
