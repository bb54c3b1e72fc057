//! The console's words in zh-CN (the default) and en: one table, looked up by key.
//!
//! Promises: every key has both languages (a unit test checks the table is complete
//! and has no duplicate key); a key missing from the table shows as itself.

use crate::desk::config::Language;

/// (key, zh-CN, en)
const WORDS: &[(&str, &str, &str)] = &[
    ("title", "网格值班台", "Grid duty desk"),
    ("wall", "总览", "Wall"),
    ("incidents", "警情", "Incidents"),
    ("feed", "事件流", "Feed"),
    ("history", "历史查询", "History"),
    ("report", "统计报表", "Report"),
    ("audit", "审计日志", "Audit log"),
    ("logout", "退出", "Log out"),
    ("login", "登录", "Log in"),
    ("user", "用户名", "User"),
    ("password", "密码", "Password"),
    ("wrong", "用户名或密码错误", "Wrong user or password"),
    ("locked", "尝试次数过多，请 5 分钟后再试", "Too many attempts: try again in 5 minutes"),
    ("online", "在线", "online"),
    ("offline", "离线", "offline"),
    ("stopped", "已停止", "stopped"),
    ("unknown", "未知", "unknown"),
    ("last_reported", "网格点离线前最后上报的状态", "as last reported before the grid point went down"),
    ("since", "自", "since"),
    ("open_alerts", "待处理警情", "open alerts"),
    ("missing", "条事件缺失", "events missing"),
    ("evicted", "条事件被设备丢弃", "events dropped by the device"),
    ("no_picture", "暂无图片", "no picture yet"),
    ("streaming", "正常", "streaming"),
    ("starting", "启动中", "starting"),
    ("reconnecting", "重连中", "reconnecting"),
    ("disabled", "已停用", "disabled"),
    ("paused", "已暂停", "paused"),
    ("state", "状态", "State"),
    ("open", "待认领", "open"),
    ("claimed", "处理中", "claimed"),
    ("resolved", "已办结", "resolved"),
    ("escalated", "已升级", "escalated"),
    ("claim", "认领", "Claim"),
    ("resolve", "办结", "Resolve"),
    ("handled", "已处置", "handled"),
    ("false_alarm", "误报", "false alarm"),
    ("duplicate", "重复", "duplicate"),
    ("note", "备注", "Note"),
    ("kind", "类型", "Kind"),
    ("label", "目标", "Label"),
    ("score", "置信度", "Score"),
    ("zones", "区域", "Zones"),
    ("site", "网格点", "Site"),
    ("camera", "摄像头", "Camera"),
    ("cameras", "摄像头", "Cameras"),
    ("started", "开始", "Started"),
    ("duration", "持续", "Duration"),
    ("ongoing", "进行中", "ongoing"),
    ("picture", "图片", "Picture"),
    ("who", "人员", "Who"),
    ("when", "时间", "When"),
    ("action", "操作", "Action"),
    ("target", "对象", "Target"),
    ("address", "地址", "Address"),
    ("detail", "详情", "Detail"),
    // The fields of an event's `detail` that the device's rules send (docs/rules.md).
    ("detail.count", "人数", "people"),
    ("detail.peak", "峰值", "peak"),
    ("detail.dwell_s", "停留（秒）", "dwell (s)"),
    ("detail.alone_s", "无人看管（秒）", "unattended (s)"),
    ("detail.schedule", "布防时段", "schedule"),
    ("detail.cause", "原因", "cause"),
    ("detail.duration_s", "持续（秒）", "duration (s)"),
    ("detail.silent_s", "无画面（秒）", "no picture for (s)"),
    ("detail.last_frame_at", "最后画面时间", "last picture at"),
    ("timeline", "时间线", "Timeline"),
    ("incident_history", "警情记录", "Incident history"),
    ("snapshots", "抓拍", "Snapshots"),
    ("clip", "视频片段", "Clip"),
    (
        "clip_note",
        "画面无法播放时（部分摄像头为 H.265 编码，本机浏览器可能不支持），请下载后用播放器打开。",
        "If the clip does not play (some cameras send H.265, which this browser may not decode), download it and open it in a video player.",
    ),
    ("download_clip", "下载视频", "Download the clip"),
    ("request_clip", "向网格点索取视频片段", "Ask the grid point for the clip"),
    ("clip_asked", "已向网格点发出请求。", "The request has gone to the grid point."),
    (
        "request_clip_note",
        "网格点只保留最近约半分钟的录像：事件开始不久时才能取到。视频到达后刷新本页；取不到时网格页的“命令错误”会说明原因。",
        "The grid point keeps only about the last half minute of video, so ask soon after the event starts. Reload this page when it has come; if it cannot, the site page's command errors say why.",
    ),
    (
        "request_clip_left",
        "网格点只保留最近 {s} 秒的录像，这个事件还剩约 {left} 秒可以索取。视频到达后刷新本页；取不到时网格页的“命令错误”会说明原因。",
        "The grid point keeps only the last {s} s of video: about {left} s are left to ask for this event's clip. Reload this page when it has come; if it cannot, the site page's command errors say why.",
    ),
    (
        "clip_gone",
        "网格点只保留最近 {s} 秒的录像，这个事件的视频已取不到。",
        "The grid point keeps only the last {s} s of video: this event's clip can no longer be had.",
    ),
    (
        "clip_none",
        "这个摄像头现在没有保留录像（录像片段已关闭或摄像头离线），取不到视频片段。",
        "This camera holds no video now (clips are off or it is offline): no clip can be had.",
    ),
    ("mismatch", "校验不符", "checksum mismatch"),
    ("pending", "待核对", "unverified"),
    ("from", "起", "From"),
    ("to", "止", "To"),
    ("date_hint", "年-月-日", "yyyy-mm-dd"),
    ("search", "查询", "Search"),
    ("csv", "导出 CSV", "Export CSV"),
    ("newer", "上一页", "Newer"),
    ("older", "下一页", "Older"),
    ("day", "日期", "Day"),
    ("total", "合计", "Total"),
    ("any", "全部", "any"),
    ("none", "无", "none"),
    ("mute", "静音", "Mute"),
    ("unmute", "取消静音", "Unmute"),
    ("alarm", "有待认领的警情", "alerts waiting"),
    ("fresh_picture", "抓取当前画面", "Fresh picture"),
    ("pause_detect", "暂停识别", "Pause detection"),
    ("resume_detect", "恢复识别", "Resume detection"),
    ("health_24h", "24 小时状态变化", "Health changes, 24 h"),
    ("fps", "帧/秒", "fps"),
    ("latest", "最新画面", "Latest picture"),
    ("sent", "已发送", "sent"),
    ("events", "事件", "events"),
    ("seq", "序号", "seq"),
    ("received", "收到", "Received"),
    ("type", "消息", "Message"),
    ("object", "目标", "object"),
    ("intrusion", "入侵", "intrusion"),
    ("loitering", "徘徊", "loitering"),
    ("crowd", "聚集", "crowd"),
    ("occupation", "占道", "occupation"),
    ("abandoned", "遗留物", "abandoned"),
    ("tamper", "遮挡破坏", "tamper"),
    ("camera_offline", "摄像头掉线", "camera offline"),
    ("line_crossing", "越线", "line crossing"),
    ("person_down", "人员倒地", "person down"),
    ("inactivity", "长时间无人", "nobody seen"),
    ("new", "新", "new"),
    ("update", "更新", "update"),
    ("end", "结束", "end"),
    ("no_incidents", "没有警情", "No incidents"),
    ("opened", "警情生成", "opened"),
    ("login_failed", "登录失败", "login failed"),
    ("login_locked", "登录被锁定", "login locked"),
    ("user_add", "添加用户", "user added"),
    ("user_remove", "删除用户", "user removed"),
    ("command", "下发指令", "command"),
    ("line_counts", "过线计数", "Line counts"),
    ("zone_peaks", "区域人数峰值", "Zone peaks"),
    ("line", "计数线", "Line"),
    ("zone", "区域", "Zone"),
    ("in", "进", "In"),
    ("out", "出", "Out"),
    ("peak", "峰值", "Peak"),
    ("not_found", "未找到", "Not found"),
    ("notices", "通知下发", "Notices"),
    ("level", "级别", "Level"),
    ("level.info", "一般", "info"),
    ("level.warning", "预警", "warning"),
    ("level.urgent", "紧急", "urgent"),
    ("all_sites", "全部网格点", "all sites"),
    ("group", "片区", "group"),
    ("expires_in", "有效期", "Expires in"),
    ("expires", "有效至", "expires"),
    ("days", "天", "days"),
    ("hours", "小时", "hours"),
    ("minutes", "分钟", "minutes"),
    ("notice_text", "通知内容", "Text"),
    ("send_notice", "发送通知", "Send notice"),
    ("no_notices", "还没有发送过通知", "No notices sent yet"),
    ("sent_by", "发送人", "sent by"),
    ("expired", "已过期", "expired"),
    ("withdrawn", "已撤回", "withdrawn"),
    ("withdraw", "撤回", "Withdraw"),
    ("played", "已播放", "Played"),
    ("error", "错误", "Error"),
    ("waiting", "等待回执", "waiting"),
    ("notice", "发送通知", "notice sent"),
    ("notice_withdraw", "撤回通知", "notice withdrawn"),
    ("command_errors", "设备拒绝的指令", "Commands refused by the device"),
    ("topic", "主题", "Topic"),
    ("reason", "原因", "Reason"),
    ("picture_asked", "已请求当前画面，等待设备回传…", "Picture asked for, waiting for the device…"),
    ("detection", "识别", "Detection"),
    ("on", "开启", "on"),
    ("off", "已暂停", "paused"),
    ("rule", "规则", "Rule"),
    ("armed", "已布防", "armed"),
    ("disarmed", "已撤防", "disarmed"),
    ("arm", "布防", "Arm"),
    ("disarm", "撤防", "Disarm"),
];

/// The detector's object labels (COCO-80, models/coco80.txt) in Chinese; English shows
/// them as the model names them.
const LABELS: &[(&str, &str)] = &[
    ("person", "行人"),
    ("bicycle", "自行车"),
    ("car", "汽车"),
    ("motorcycle", "摩托车"),
    ("airplane", "飞机"),
    ("bus", "公交车"),
    ("train", "火车"),
    ("truck", "货车"),
    ("boat", "船"),
    ("traffic light", "红绿灯"),
    ("fire hydrant", "消防栓"),
    ("stop sign", "停车标志"),
    ("parking meter", "停车计时器"),
    ("bench", "长椅"),
    ("bird", "鸟"),
    ("cat", "猫"),
    ("dog", "狗"),
    ("horse", "马"),
    ("sheep", "羊"),
    ("cow", "牛"),
    ("elephant", "大象"),
    ("bear", "熊"),
    ("zebra", "斑马"),
    ("giraffe", "长颈鹿"),
    ("backpack", "背包"),
    ("umbrella", "雨伞"),
    ("handbag", "手提包"),
    ("tie", "领带"),
    ("suitcase", "行李箱"),
    ("frisbee", "飞盘"),
    ("skis", "滑雪板"),
    ("snowboard", "单板滑雪板"),
    ("sports ball", "球"),
    ("kite", "风筝"),
    ("baseball bat", "棒球棒"),
    ("baseball glove", "棒球手套"),
    ("skateboard", "滑板"),
    ("surfboard", "冲浪板"),
    ("tennis racket", "网球拍"),
    ("bottle", "瓶子"),
    ("wine glass", "酒杯"),
    ("cup", "杯子"),
    ("fork", "叉子"),
    ("knife", "刀"),
    ("spoon", "勺子"),
    ("bowl", "碗"),
    ("banana", "香蕉"),
    ("apple", "苹果"),
    ("sandwich", "三明治"),
    ("orange", "橙子"),
    ("broccoli", "西兰花"),
    ("carrot", "胡萝卜"),
    ("hot dog", "热狗"),
    ("pizza", "披萨"),
    ("donut", "甜甜圈"),
    ("cake", "蛋糕"),
    ("chair", "椅子"),
    ("couch", "沙发"),
    ("potted plant", "盆栽"),
    ("bed", "床"),
    ("dining table", "餐桌"),
    ("toilet", "马桶"),
    ("tv", "电视"),
    ("laptop", "笔记本电脑"),
    ("mouse", "鼠标"),
    ("remote", "遥控器"),
    ("keyboard", "键盘"),
    ("cell phone", "手机"),
    ("microwave", "微波炉"),
    ("oven", "烤箱"),
    ("toaster", "烤面包机"),
    ("sink", "水槽"),
    ("refrigerator", "冰箱"),
    ("book", "书"),
    ("clock", "钟"),
    ("vase", "花瓶"),
    ("scissors", "剪刀"),
    ("teddy bear", "玩具熊"),
    ("hair drier", "吹风机"),
    ("toothbrush", "牙刷"),
];

/// An object label in the console's language; a label the table does not know (another
/// model's) shows as the device sent it.
pub fn label(lang: Language, label: &str) -> String {
    match lang {
        Language::ZhCn => LABELS.iter().find(|l| l.0 == label).map_or(label, |l| l.1).to_owned(),
        Language::En => label.to_owned(),
    }
}

pub fn t(lang: Language, key: &str) -> String {
    match WORDS.iter().find(|w| w.0 == key) {
        Some((_, zh, en)) => match lang {
            Language::ZhCn => (*zh).to_owned(),
            Language::En => (*en).to_owned(),
        },
        None => key.to_owned(),
    }
}

/// A word that starts a heading or a title: in English its first letter is a capital
/// (the table's English words are lower case, for use inside sentences).
pub fn heading(lang: Language, key: &str) -> String {
    let word = t(lang, key);
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => word,
    }
}

/// A field of an event's `detail` by its name; a field the table does not know (a
/// newer device) shows under its own name.
pub fn detail_field(lang: Language, field: &str) -> String {
    let key = format!("detail.{field}");
    match t(lang, &key) {
        same if same == key => field.to_owned(),
        word => word,
    }
}

/// The `lang` attribute of the pages.
pub fn code(lang: Language) -> &'static str {
    match lang {
        Language::ZhCn => "zh-CN",
        Language::En => "en",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_complete_and_unique() {
        let mut keys = std::collections::HashSet::new();
        for (k, zh, en) in WORDS {
            assert!(keys.insert(k), "{k} twice");
            assert!(!zh.is_empty() && !en.is_empty(), "{k}");
        }
        assert_eq!(t(Language::ZhCn, "wall"), "总览");
        assert_eq!(t(Language::En, "wall"), "Wall");
    }

    #[test]
    fn labels_are_translated_and_unknown_ones_kept() {
        assert_eq!(label(Language::ZhCn, "person"), "行人");
        assert_eq!(label(Language::ZhCn, "car"), "汽车");
        assert_eq!(label(Language::En, "car"), "car");
        assert_eq!(label(Language::ZhCn, "forklift"), "forklift");
        let coco = include_str!("../../../models/coco80.txt");
        for l in coco.lines().filter(|l| !l.is_empty()) {
            assert_ne!(label(Language::ZhCn, l), l, "{l} has no Chinese name");
        }
        let mut seen = std::collections::HashSet::new();
        assert!(LABELS.iter().all(|l| seen.insert(l.0)), "a label twice");
    }

    #[test]
    fn detail_fields_are_named_and_unknown_ones_kept() {
        assert_eq!(detail_field(Language::ZhCn, "dwell_s"), "停留（秒）");
        assert_eq!(detail_field(Language::En, "count"), "people");
        assert_eq!(detail_field(Language::ZhCn, "wind_speed"), "wind_speed");
        assert_eq!(detail_field(Language::En, "detail"), "detail", "only detail.* keys are looked up");
    }
}
