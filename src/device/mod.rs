//! The grid point's daemon: cameras in, events out. Data flows one way through the
//! stage folders: `ingest` -> `analysis` -> `publish`, with `ops` watching and
//! `daemon` wiring them; `clip` cuts each alert's video from ingest's access units
//! for `publish`; `command` takes what the desk says back (switches read by
//! `analysis`, answers sent by `publish`); `config` is parsed once into the validated
//! values they take; `geometry` holds the box every stage speaks of.

pub mod analysis;
pub mod clip;
pub mod command;
pub mod config;
pub mod daemon;
pub mod geometry;
pub mod ingest;
pub mod ops;
pub mod publish;
