//! Region crops: square parts of the analysis picture around far zones, shown to the
//! detector at its full input size, so that objects too small in the whole-frame view
//! (a person 8 px tall at the model's input) get enough pixels to be found; and the
//! merge of what the crops find with what the whole frame found.
//!
//! Promises: `plan` gives, for one picture size, one square per zone, or per group of
//! zones whose squares overlap, that magnifies at least `MIN_GAIN` times over the
//! whole-frame view; a square is at least the model's input side where the picture
//! allows, lies inside the picture and covers its zones' bounding boxes with a margin.
//! Zones that are large already get none. `merge` keeps one box per object: inside a
//! crop the crop's boxes stand for what the whole frame found there (it sees a group
//! of three where the whole frame saw two), a crop box cut by an inner crop edge (not
//! the picture's) gives way to the whole frame's box of that class, and per-class NMS
//! settles the rest. Pure logic: no model, no clocks.

use crate::device::analysis::detect::Detection;
use crate::device::analysis::detect::yolox::{self, Region};
use crate::device::analysis::zone::Polygon;
use crate::device::geometry::BBox;

/// Least magnification over the whole-frame view that is worth an extra inference.
pub const MIN_GAIN: f32 = 1.5;
/// Room around a zone's bounding box, as a share of its larger side: objects are in a
/// zone by where they stand, so a person at the zone's far edge reaches out of it.
const MARGIN: f32 = 0.2;
/// A box this close (pixels) to an inner crop edge is taken as cut by it.
const EDGE_PX: f32 = 2.0;
/// A whole-frame box and a crop box of one class overlapping this much (IoU) show the
/// same object, or the same group of them.
const SAME_OBJECT_IOU: f32 = 0.3;

/// A crop and the zones (indexes) it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Crop {
    pub region: Region,
    pub zones: Vec<usize>,
}

/// The crops worth running for `zones` on a `w` x `h` picture, for a model whose square
/// input has side `input`.
pub fn plan(zones: &[Polygon], (w, h): (u32, u32), input: u32) -> Vec<Crop> {
    if w == 0 || h == 0 {
        return Vec::new();
    }
    let boxes: Vec<BBox> = zones.iter().map(|z| zone_box(z, (w, h))).collect();
    let mut crops: Vec<(BBox, Crop)> = boxes
        .iter()
        .enumerate()
        .filter_map(|(i, b)| square_for(b, (w, h), input).map(|r| (*b, Crop { region: r, zones: vec![i] })))
        .collect();
    // Overlapping squares become one when the square around both still magnifies
    // enough; otherwise both stay (the merge drops the double boxes).
    'again: loop {
        for i in 0..crops.len() {
            for j in i + 1..crops.len() {
                if !overlaps(&crops[i].1.region, &crops[j].1.region) {
                    continue;
                }
                let both = union(&crops[i].0, &crops[j].0);
                if let Some(region) = square_for(&both, (w, h), input) {
                    let (_, b) = crops.remove(j);
                    let a = &mut crops[i];
                    a.0 = both;
                    a.1.region = region;
                    a.1.zones.extend(b.zones);
                    a.1.zones.sort_unstable();
                    continue 'again;
                }
            }
        }
        break;
    }
    crops.into_iter().map(|(_, c)| c).collect()
}

/// The zone's bounding box in pixels, inside the picture.
fn zone_box(z: &Polygon, (w, h): (u32, u32)) -> BBox {
    let pts = z.in_pixels(w, h);
    let (mut b, (wf, hf)) = (BBox { x1: f32::MAX, y1: f32::MAX, x2: f32::MIN, y2: f32::MIN }, (w as f32, h as f32));
    for (x, y) in pts {
        b = BBox { x1: b.x1.min(x), y1: b.y1.min(y), x2: b.x2.max(x), y2: b.y2.max(y) };
    }
    BBox { x1: b.x1.clamp(0.0, wf), y1: b.y1.clamp(0.0, hf), x2: b.x2.clamp(0.0, wf), y2: b.y2.clamp(0.0, hf) }
}

/// The square around `b` (with margin), or None when no square inside the picture
/// covers it while magnifying at least `MIN_GAIN`.
fn square_for(b: &BBox, (w, h): (u32, u32), input: u32) -> Option<Region> {
    let need = b.width().max(b.height()) * (1.0 + 2.0 * MARGIN);
    let side = need.max(input as f32).min(w.min(h) as f32).round() as u32;
    // The whole frame is shown at input / max(w, h) model pixels per picture pixel,
    // the crop at input / side.
    let gain = w.max(h) as f32 / side.max(1) as f32;
    if need > w.min(h) as f32 || gain < MIN_GAIN {
        return None;
    }
    let place = |centre: f32, len: u32| ((centre - side as f32 / 2.0).round().max(0.0) as u32).min(len - side);
    let (cx, cy) = ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0);
    Some(Region { left: place(cx, w), top: place(cy, h), width: side, height: side })
}

fn overlaps(a: &Region, b: &Region) -> bool {
    a.left < b.left + b.width && b.left < a.left + a.width && a.top < b.top + b.height && b.top < a.top + a.height
}

fn union(a: &BBox, b: &BBox) -> BBox {
    BBox { x1: a.x1.min(b.x1), y1: a.y1.min(b.y1), x2: a.x2.max(b.x2), y2: a.y2.max(b.y2) }
}

/// `region` as a box in picture pixels.
pub fn region_box(r: &Region) -> BBox {
    BBox { x1: r.left as f32, y1: r.top as f32, x2: (r.left + r.width) as f32, y2: (r.top + r.height) as f32 }
}

/// Whether the centre of `b` lies in `r`: the object belongs to that crop.
pub fn holds(r: &Region, b: &BBox) -> bool {
    let (cx, cy) = ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0);
    let rb = region_box(r);
    (rb.x1..rb.x2).contains(&cx) && (rb.y1..rb.y2).contains(&cy)
}

/// Whether `b`, found in crop `r` of a `w` x `h` picture, touches one of the crop's
/// edges that lie inside the picture (where the object may go on, unseen by the crop).
fn cut_by_inner_edge(b: &BBox, r: &Region, (w, h): (u32, u32)) -> bool {
    let rb = region_box(r);
    (r.left > 0 && b.x1 <= rb.x1 + EDGE_PX)
        || (r.top > 0 && b.y1 <= rb.y1 + EDGE_PX)
        || (r.left + r.width < w && b.x2 >= rb.x2 - EDGE_PX)
        || (r.top + r.height < h && b.y2 >= rb.y2 - EDGE_PX)
}

/// One list of detections from the whole frame's (`full`) and the crops' (each with
/// its region), best first; boxes in picture pixels of a `w` x `h` picture.
pub fn merge(
    full: Vec<Detection>,
    crops: Vec<(Region, Vec<Detection>)>,
    size: (u32, u32),
    nms_iou: f32,
) -> Vec<Detection> {
    // A whole-frame box inside a crop that found the same object (in more detail) is
    // the crop's to tell: NMS alone would keep both where their boxes differ.
    let mut all: Vec<Detection> = full
        .iter()
        .filter(|f| {
            !crops.iter().any(|(r, dets)| {
                within(&f.bbox, r)
                    && dets.iter().any(|d| d.class_id == f.class_id && d.bbox.iou(&f.bbox) >= SAME_OBJECT_IOU)
            })
        })
        .cloned()
        .collect();
    for (r, dets) in crops {
        all.extend(dets.into_iter().filter(|d| {
            // A cut box is a part of an object the whole frame saw entire.
            !(cut_by_inner_edge(&d.bbox, &r, size)
                && full.iter().any(|f| f.class_id == d.class_id && covered_share(&d.bbox, &f.bbox) > 0.3))
        }));
    }
    yolox::nms(all, nms_iou)
}

/// Where the turned views look, and the one class they keep (person).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnedView {
    pub region: Region,
    pub person: usize,
}

/// What the turned views look at for `zones` (those with a person_down rule) on a
/// `w` x `h` picture: their bounding box with margin, inside the picture (a lying
/// person reaches out of the zone they lie in by half their length).
pub fn turned_region(zones: &[&Polygon], (w, h): (u32, u32)) -> Option<Region> {
    let b = zones.iter().map(|z| zone_box(z, (w, h))).reduce(|a, b| union(&a, &b))?;
    let m = MARGIN * b.width().max(b.height());
    let (x1, y1) = ((b.x1 - m).max(0.0).floor() as u32, (b.y1 - m).max(0.0).floor() as u32);
    let (x2, y2) = (((b.x2 + m).ceil() as u32).min(w), ((b.y2 + m).ceil() as u32).min(h));
    (x2 > x1 && y2 > y1).then(|| Region { left: x1, top: y1, width: x2 - x1, height: y2 - y1 })
}

/// `found` with the persons (`person` class) the turned views found lying, wider
/// than tall, added; per-class NMS keeps one box per person. Whatever else the
/// turned views saw (a standing person on their side, a car on its end) is dropped:
/// the upright view knows those better.
pub fn merge_lying(mut found: Vec<Detection>, turned: Vec<Detection>, person: usize, nms_iou: f32) -> Vec<Detection> {
    found.extend(turned.into_iter().filter(|d| d.class_id == person && d.bbox.width() > d.bbox.height()));
    yolox::nms(found, nms_iou)
}

/// Whether `b` lies inside `r`, clear of its edges.
fn within(b: &BBox, r: &Region) -> bool {
    let rb = region_box(r);
    b.x1 > rb.x1 + EDGE_PX && b.y1 > rb.y1 + EDGE_PX && b.x2 < rb.x2 - EDGE_PX && b.y2 < rb.y2 - EDGE_PX
}

/// Share of `a`'s area that lies inside `b`.
fn covered_share(a: &BBox, b: &BBox) -> f32 {
    let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    w * h / a.area().max(1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x1: f32, y1: f32, x2: f32, y2: f32) -> Polygon {
        Polygon(vec![[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    }

    fn det(class_id: usize, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection { class_id, score, bbox: BBox { x1, y1, x2, y2 } }
    }

    #[test]
    fn the_turned_region_covers_the_down_zones_with_margin_inside_the_picture() {
        let (a, b) = (rect(0.1, 0.5, 0.3, 0.9), rect(0.6, 0.6, 0.7, 0.7));
        let r = turned_region(&[&a, &b], (1000, 500)).expect("region");
        // Boxes 100..700 x 250..450: margin 0.2 * 600 = 120, cut at the picture's edges.
        assert_eq!((r.left, r.top, r.width, r.height), (0, 130, 820, 370));
        assert_eq!(turned_region(&[], (1000, 500)), None);
    }

    #[test]
    fn only_lying_persons_from_the_turned_views_join_and_once() {
        let upright = vec![det(0, 0.8, 10.0, 10.0, 30.0, 70.0), det(2, 0.7, 100.0, 100.0, 200.0, 150.0)];
        let turned = vec![
            det(0, 0.6, 300.0, 300.0, 380.0, 330.0),  // lying: joins
            det(0, 0.5, 12.0, 10.0, 30.0, 72.0),      // standing, seen on its side: dropped
            det(2, 0.9, 400.0, 100.0, 500.0, 150.0),  // a car: the upright view's to find
            det(0, 0.55, 302.0, 301.0, 381.0, 331.0), // the same lying person again
        ];
        let got = merge_lying(upright.clone(), turned, 0, 0.45);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.contains(&upright[0]) && got.contains(&upright[1]));
        assert!(got.iter().any(|d| d.score == 0.6 && d.bbox.x1 == 300.0));
    }

    #[test]
    fn a_far_zone_gets_a_square_of_the_input_side_around_it_inside_the_picture() {
        // The far lawn of the 1080p clip, on its 1280x720 analysis picture.
        let crops = plan(&[rect(0.13, 0.04, 0.42, 0.22)], (1280, 720), 416);
        assert_eq!(crops.len(), 1, "{crops:?}");
        let r = crops[0].region;
        // 371 px wide zone plus margin: 520 px, shown 1280 / 520 = 2.5x larger.
        assert_eq!((r.width, r.height), (520, 520));
        assert_eq!(r.top, 0, "clamped at the top");
        let zb = zone_box(&rect(0.13, 0.04, 0.42, 0.22), (1280, 720));
        assert!(r.left as f32 <= zb.x1 && (r.left + r.width) as f32 >= zb.x2, "{r:?} covers {zb:?}");
        // A small zone at the corner: the square keeps the input side, pushed inside.
        let r = plan(&[rect(0.95, 0.9, 1.0, 1.0)], (1280, 720), 416)[0].region;
        assert_eq!((r.left, r.top, r.width, r.height), (1280 - 416, 720 - 416, 416, 416));
    }

    #[test]
    fn large_zones_get_no_crop_and_small_pictures_need_less() {
        // Half the picture: a square around it would magnify less than 1.5x.
        assert!(plan(&[rect(0.1, 0.1, 0.6, 0.9)], (1280, 720), 416).is_empty());
        // Wider than the picture is tall: no square covers it.
        assert!(plan(&[rect(0.0, 0.4, 0.7, 0.5)], (1280, 720), 416).is_empty());
        // A 768x576 picture: a 416 square magnifies 768 / 416 = 1.85x.
        assert_eq!(plan(&[rect(0.1, 0.1, 0.3, 0.3)], (768, 576), 416).len(), 1);
        // 480x270: the square is the picture's height, shown 480 / 270 = 1.8x larger.
        let r = plan(&[rect(0.1, 0.1, 0.3, 0.3)], (480, 270), 416)[0].region;
        assert_eq!((r.left, r.top, r.width, r.height), (0, 0, 270, 270));
        // 400x300, about the input's size: a square of 300 gains 1.33x only.
        assert!(plan(&[rect(0.1, 0.1, 0.3, 0.3)], (400, 300), 416).is_empty());
        assert!(plan(&[], (1280, 720), 416).is_empty());
    }

    #[test]
    fn overlapping_squares_merge_when_the_merged_one_still_magnifies() {
        let near = [rect(0.10, 0.05, 0.20, 0.15), rect(0.25, 0.05, 0.35, 0.15)];
        let crops = plan(&near, (1280, 720), 416);
        assert_eq!(crops.len(), 1, "{crops:?}");
        assert_eq!(crops[0].zones, [0, 1]);
        // Far apart: two squares.
        let apart = [rect(0.13, 0.04, 0.42, 0.22), rect(0.74, 0.03, 0.88, 0.25)];
        let crops = plan(&apart, (1280, 720), 416);
        assert_eq!(crops.iter().map(|c| c.zones.clone()).collect::<Vec<_>>(), [vec![0], vec![1]]);
        // Overlapping, but the square around both would be too large: both stay.
        let wide = [rect(0.0, 0.0, 0.35, 0.3), rect(0.3, 0.0, 0.65, 0.3)];
        assert_eq!(plan(&wide, (1280, 720), 416).len(), 2);
    }

    #[test]
    fn merge_keeps_one_box_per_object_and_drops_crop_boxes_cut_inside_the_picture() {
        let r = Region { left: 400, top: 0, width: 416, height: 416 };
        let size = (1280, 720);
        let full = vec![
            // A far person the crop sees better, and a car cut by the crop's right edge.
            det(0, 0.55, 500.0, 100.0, 512.0, 130.0),
            det(2, 0.8, 790.0, 200.0, 900.0, 260.0),
        ];
        let crop = vec![
            det(0, 0.85, 501.0, 99.0, 512.0, 131.0),
            det(2, 0.9, 790.0, 201.0, 816.0, 259.0),
            // Only the crop sees this one.
            det(0, 0.7, 600.0, 50.0, 606.0, 66.0),
            // Cut by the picture's top edge, which is no crop edge: kept.
            det(2, 0.6, 450.0, 0.0, 480.0, 20.0),
        ];
        let got = merge(full, vec![(r, crop)], size, 0.45);
        let boxes: Vec<(usize, f32)> = got.iter().map(|d| (d.class_id, d.score)).collect();
        assert_eq!(boxes, [(0, 0.85), (2, 0.8), (0, 0.7), (2, 0.6)]);
        // Cut by the inner edge with no whole-frame box of its class: kept, as it is
        // all there is of that object.
        let alone = merge(Vec::new(), vec![(r, vec![det(2, 0.9, 790.0, 201.0, 816.0, 259.0)])], size, 0.45);
        assert_eq!(alone.len(), 1);
    }

    #[test]
    fn inside_a_crop_its_finer_view_of_a_group_wins() {
        // The 768x576 clip: three people by a sign post, two boxes in the whole frame,
        // three in the crossing zone's crop (IoU 0.48 and 0.5 with the whole frame's).
        let r = Region { left: 352, top: 160, width: 416, height: 416 };
        let full = vec![det(0, 0.67, 368.0, 170.0, 395.0, 248.0), det(0, 0.67, 398.0, 178.0, 423.0, 262.0)];
        let crop = vec![
            det(0, 0.76, 364.0, 172.0, 384.0, 243.0),
            det(0, 0.75, 376.0, 179.0, 398.0, 260.0),
            det(0, 0.67, 397.0, 183.0, 417.0, 248.0),
        ];
        let got = merge(full.clone(), vec![(r, crop.clone())], (768, 576), 0.45);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|d| crop.contains(d)), "{got:?}");
        // One the crop missed stays.
        let got = merge(full, vec![(r, crop[..1].to_vec())], (768, 576), 0.45);
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn an_object_belongs_to_the_crop_holding_its_centre() {
        let r = Region { left: 100, top: 0, width: 416, height: 416 };
        assert!(holds(&r, &BBox { x1: 90.0, y1: 10.0, x2: 130.0, y2: 50.0 }));
        assert!(!holds(&r, &BBox { x1: 510.0, y1: 10.0, x2: 540.0, y2: 50.0 }));
        assert!(!holds(&r, &BBox { x1: 50.0, y1: 10.0, x2: 70.0, y2: 50.0 }));
    }
}
