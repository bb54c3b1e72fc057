//! The store's own rules, on a real SQLite file in a scratch folder: a hole in `seq`
//! shows as missing only after its grace time (time injected by ageing the row),
//! retention's order (clips, then pictures, rows last; everything past keep_days),
//! the event filter's checks, and the report's stats figures.

use super::*;
use crate::contract::EventMessage;

fn store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

fn event(site: &str, seq: u64, id: &str, snapshot: Option<(&str, &[u8])>) -> EventMessage {
    let snap = snapshot.map(|(topic, bytes)| {
        serde_json::json!({"topic": topic, "sha256": crate::contract::hex(&sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(bytes))), "bytes": bytes.len(), "width": 1, "height": 1})
    });
    serde_json::from_value(serde_json::json!({
        "schema": "gridwatch.event/1", "seq": seq, "event_id": id, "type": "new", "kind": "object",
        "site": site, "camera": "cam-1", "label": "person", "score": 0.8, "box": [0, 0, 1, 1], "zones": [],
        "started_at": "2026-11-30T08:00:00.000Z", "at": "2026-11-30T08:00:00.000Z", "ended_at": null,
        "snapshot": snap,
    }))
    .unwrap()
}

fn put(s: &Store, e: &EventMessage) {
    s.put_event(e, "{}", false, None).unwrap();
}

fn missing(s: &Store) -> i64 {
    s.sites(&[]).unwrap().iter().find(|v| v.site == "g1").unwrap().missing_events
}

fn count(s: &Store, sql: &str) -> i64 {
    s.with(|c| Ok(c.query_row(sql, [], |r| r.get(0))?)).unwrap()
}

#[test]
fn a_seq_hole_counts_as_missing_only_after_its_grace_time_and_shrinks_when_filled() {
    let (_d, s) = store();
    put(&s, &event("g1", 1, "a", None));
    put(&s, &event("g1", 5, "b", None));
    assert_eq!(missing(&s), 0, "a fresh hole may still fill");
    // Ten minutes and a second pass: the hole is shown.
    s.with(|c| Ok(c.execute("UPDATE gaps SET seen_at = seen_at - ?1", [queries::GAP_GRACE_MS + 1000])?)).unwrap();
    assert_eq!(missing(&s), 3, "seq 2, 3 and 4");
    put(&s, &event("g1", 3, "c", None));
    assert_eq!(missing(&s), 2, "a late seq 3 fills its place");
    put(&s, &event("g1", 3, "c", None));
    assert_eq!(missing(&s), 2, "a repeat changes nothing");
}

/// Three events with a 100 kB picture each, the first also with a 300 kB clip.
fn filled_store() -> (tempfile::TempDir, Arc<Store>) {
    let (d, s) = store();
    for (n, id) in ["e1", "e2", "e3"].iter().enumerate() {
        let pic = vec![n as u8; 100_000];
        let topic = format!("gridwatch/g1/snapshots/{id}-1");
        s.put_file("g1", &topic, "snapshot", id, &pic).unwrap();
        let clip = (n == 0).then_some(FileClaim { topic: "gridwatch/g1/clips/e1", sha256: "", kind: "clip" });
        s.put_event(&event("g1", n as u64 + 1, id, Some((&topic, &pic))), "{}", false, clip).unwrap();
    }
    s.put_file("g1", "gridwatch/g1/clips/e1", "clip", "e1", &vec![9u8; 300_000]).unwrap();
    (d, s)
}

fn files_on_disk(s: &Store) -> usize {
    walk(&s.files_dir())
}

fn walk(p: &std::path::Path) -> usize {
    std::fs::read_dir(p).unwrap().flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
}

#[test]
fn over_max_bytes_clips_go_first_then_pictures_and_rows_last() {
    let (_d, s) = filled_store();
    assert_eq!(files_on_disk(&s), 4);
    let used = s.used_bytes().unwrap();
    // 200 kB too much: the clip (300 kB) alone makes room.
    s.retain(used - 200_000, 90).unwrap();
    assert_eq!(count(&s, "SELECT count(*) FROM files WHERE kind = 'clip' AND path IS NOT NULL"), 0);
    assert_eq!(count(&s, "SELECT count(*) FROM files WHERE kind = 'snapshot' AND path IS NOT NULL"), 3);
    assert_eq!(count(&s, "SELECT count(*) FROM events"), 3);
    assert_eq!(files_on_disk(&s), 3, "the clip's file is gone from disk");
    // Room for the rows but not the pictures: pictures go, every row stays.
    let used = s.used_bytes().unwrap();
    s.retain(used - 300_000 + 64 * 1024, 90).unwrap();
    assert_eq!(count(&s, "SELECT count(*) FROM files WHERE path IS NOT NULL"), 0);
    assert_eq!(count(&s, "SELECT count(*) FROM events"), 3, "rows stay while dropping files sufficed");
    assert_eq!(files_on_disk(&s), 0);
    let e = s.event("g1", "e1").unwrap().unwrap();
    assert!(e.snapshots.is_empty() && e.clip.is_none(), "an evicted picture is no longer offered");
    // Nothing left but rows: now they go.
    s.retain(1, 90).unwrap();
    assert_eq!(count(&s, "SELECT count(*) FROM events"), 0);
    assert_eq!(count(&s, "SELECT count(*) FROM messages"), 0);
}

#[test]
fn past_keep_days_everything_of_an_event_goes() {
    let (_d, s) = filled_store();
    let day = 86_400_000;
    s.with(|c| {
        c.execute("UPDATE events SET received_at = received_at - ?1 WHERE event_id = 'e1'", [3 * day])?;
        c.execute("UPDATE files SET received_at = received_at - ?1 WHERE event_id = 'e1'", [3 * day])?;
        Ok(())
    })
    .unwrap();
    s.retain(u64::MAX, 2).unwrap();
    assert!(s.event("g1", "e1").unwrap().is_none(), "older than keep_days: gone");
    assert_eq!(count(&s, "SELECT count(*) FROM files WHERE event_id = 'e1'"), 0);
    assert_eq!(count(&s, "SELECT count(*) FROM events"), 2, "the younger ones stay");
    assert_eq!(files_on_disk(&s), 2);
}

#[test]
fn the_event_filter_refuses_what_it_cannot_use() {
    let f = |q: &str| -> Result<EventFilter, String> {
        let v: EventFilter = serde_json::from_str(q).unwrap();
        v.validated(50).map_err(|e| e.to_string())
    };
    assert_eq!(f("{}").unwrap().limit, Some(50));
    assert_eq!(f(r#"{"limit": 5000}"#).unwrap().limit, Some(1000));
    assert_eq!(f(r#"{"site": "  "}"#).unwrap().site, None, "empty means any");
    assert_eq!(f(r#"{"from": "2026-11-30T08:00:00Z"}"#).unwrap().from.as_deref(), Some("2026-11-30T08:00:00.000Z"));
    for (bad, field) in [
        (r#"{"site": "A b"}"#, "site"),
        (r#"{"state": "gone"}"#, "state"),
        (r#"{"from": "yesterday"}"#, "from"),
        (r#"{"to": "2026-13-45x"}"#, "to"),
        (r#"{"page": 100001}"#, "page"),
        (r#"{"label": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#, "label"),
    ] {
        let e = f(bad).unwrap_err();
        assert!(e.starts_with(field), "{bad}: {e}");
    }
}

#[test]
fn the_report_sums_line_crossings_and_keeps_zone_peaks() {
    let (_d, s) = store();
    for (seq, day, i, o, peak) in [(1, "2026-11-28", 5, 3, 4), (2, "2026-11-28", 2, 1, 7), (3, "2026-11-29", 1, 0, 2)] {
        let body = serde_json::json!({"schema": "gridwatch.stats/1", "seq": seq, "site": "g1", "camera": "cam-1",
            "period_start": format!("{day}T08:00:00.000Z"), "period_end": format!("{day}T08:05:00.000Z"),
            "lines": {"gate": {"person": {"in": i, "out": o}}}, "zones": {"yard": {"person": {"peak": peak, "mean": 1.5}}}});
        s.put_stats("g1", seq, "cam-1", &format!("{day}T08:00:00.000Z"), &body.to_string()).unwrap();
    }
    put(&s, &event("g1", 1, "a", None));
    let rows = s.report("2026-11-28", &end_of("2026-11-30")).unwrap();
    let days: Vec<&str> = rows.iter().map(|r| r.day.as_str()).collect();
    assert_eq!(days, ["2026-11-28", "2026-11-29", "2026-11-30"]);
    assert_eq!(rows[0].lines["gate/person"], [7, 4]);
    assert_eq!(rows[0].peaks["yard/person"], 7, "the highest peak, not a sum");
    assert_eq!(rows[1].lines["gate/person"], [1, 0]);
    assert_eq!(rows[2].counts["object"], 1);
    assert!(s.report("2026-11-29", "2026-11-29").unwrap().is_empty(), "an empty range is empty");
}

#[test]
fn an_event_knows_how_much_video_its_camera_keeps() {
    let (_d, s) = store();
    put(&s, &event("g1", 1, "a", None));
    let ring = |s: &Store| s.event_detail("g1", "a").unwrap().unwrap().clip_ring_s;
    assert_eq!(ring(&s), None, "no health heard yet");
    s.put_health("g1", "cam-1", "streaming", 5.0, r#"{"state":"streaming","clip_ring_s":28.5}"#).unwrap();
    assert_eq!(ring(&s), Some(28.5));
    s.put_health("g1", "cam-1", "streaming", 5.0, r#"{"state":"streaming"}"#).unwrap();
    assert_eq!(ring(&s), None, "an older device that does not say");
    s.put_health("g1", "cam-2", "streaming", 5.0, r#"{"clip_ring_s":0}"#).unwrap();
    assert_eq!(ring(&s), None, "another camera's ring is not this one's");
}
