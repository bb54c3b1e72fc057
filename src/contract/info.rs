//! The retained device description on `{root}/{site}/info` (docs/schema/info.schema.json).

use serde::{Deserialize, Serialize};

pub const INFO_SCHEMA: &str = "gridwatch.info/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub schema: String,
    pub version: String,
    pub site: String,
    pub started_at: String,
    pub cameras: Vec<InfoCamera>,
    pub model: InfoModel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoCamera {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoModel {
    pub name: String,
    pub sha256: String,
}
