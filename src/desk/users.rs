//! `gridwatch desk user add|list|remove`: the desk's accounts, kept in its database.
//!
//! Promises: there is no default password; a password is read twice from a terminal
//! (not echoed) or once from standard input, never from the command line; it must be
//! at least 10 characters; every change lands in the audit log.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use super::config::DeskConfig;
use super::store::{Role, Store};

const MIN_PASSWORD: usize = 10;

fn open(config: &Path) -> anyhow::Result<std::sync::Arc<Store>> {
    let cfg = DeskConfig::load(config)?;
    Store::open(&cfg.storage.dir)
}

fn operator() -> String {
    std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "cli".into())
}

pub fn user_add(config: &Path, name: &str, role: &str) -> anyhow::Result<()> {
    let role = Role::parse(role).ok_or_else(|| anyhow::anyhow!("--role: use viewer, operator or admin"))?;
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        anyhow::bail!("NAME: give 1-64 characters without spaces");
    }
    let store = open(config)?;
    let password = read_password()?;
    store.user_add(name, role, &password)?;
    store.audit(Some(&operator()), "cli", "user_add", name, role.as_str())?;
    println!("user {name} ({}) saved", role.as_str());
    Ok(())
}

pub fn user_list(config: &Path) -> anyhow::Result<()> {
    for u in open(config)?.user_list()? {
        println!("{}\t{}\t{}", u.name, u.role.as_str(), super::store::rfc3339(u.created_at));
    }
    Ok(())
}

pub fn user_remove(config: &Path, name: &str) -> anyhow::Result<()> {
    let store = open(config)?;
    if !store.user_remove(name)? {
        anyhow::bail!("no user {name}");
    }
    store.audit(Some(&operator()), "cli", "user_remove", name, "")?;
    println!("user {name} removed");
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt("Password: ")?;
        if prompt("Again: ")? != first {
            anyhow::bail!("the two passwords differ; nothing saved");
        }
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.chars().count() < MIN_PASSWORD {
        anyhow::bail!("the password must have at least {MIN_PASSWORD} characters; nothing saved");
    }
    Ok(password)
}

/// Reads a line from the terminal with echo off.
fn prompt(text: &str) -> anyhow::Result<String> {
    eprint!("{text}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it, tcsetattr restores it below.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes only into `saved`, which we own.
    let have_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: tcsetattr only reads the termios we pass.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if have_tty {
        // SAFETY: as above, restoring what tcgetattr gave.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
