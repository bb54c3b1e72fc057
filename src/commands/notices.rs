//! `gridwatch notices`: the street office's notices this grid point received, with
//! when each was played, read from the storage folder (the daemon need not run).

use std::process::ExitCode;
use std::time::SystemTime;

use super::events::StoreArgs;
use super::output::{exit, table};
use crate::device::command::notices;

#[derive(Debug, clap::Args)]
pub struct NoticesArgs {
    /// One JSON object per notice and line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: NoticesArgs) -> anyhow::Result<ExitCode> {
    let dir = match args.store.dir() {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let list = match notices::read(&dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.join(notices::FILE_NAME).display());
            return Ok(ExitCode::from(exit::STORE));
        }
    };
    if args.json {
        for n in &list {
            println!("{}", serde_json::to_string(n)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no notices received");
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemTime::now();
    let mut rows = vec![["RECEIVED", "LEVEL", "EXPIRES", "PLAYED", "NOTICE", "TEXT"].map(String::from).to_vec()];
    for n in &list {
        let played = match (&n.played_at, &n.error) {
            (Some(t), _) => t.clone(),
            (None, Some(e)) => format!("no: {e}"),
            (None, None) => "-".into(),
        };
        let expires = if n.expired(now) { format!("{} (expired)", n.expires_at) } else { n.expires_at.clone() };
        let text: String = n.text.replace('\n', " ").chars().filter(|c| !c.is_control()).take(60).collect();
        rows.push(vec![n.received_at.clone(), n.level.as_str().into(), expires, played, n.notice_id.clone(), text]);
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}
