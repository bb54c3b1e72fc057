//! End-to-end tests on real parts: mosquitto, GStreamer's RTSP server streaming the
//! street clip, the real model, and `gridwatch` itself as a separate process, watched
//! through the broker the way the duty desk watches it. One test binary (builds are
//! slow); one module per area.

mod acl;
mod cli;
mod clips;
mod commands;
mod desk;
mod desk_support;
mod disk;
mod faults;
mod hostile;
mod package;
mod person;
mod rules;
mod slice;
mod stats;
mod support;
