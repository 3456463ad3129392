//! CloudWatch `PutMetricData` request bodies (the JSON protocol's shape).

use serde_json::{json, Value};

use super::{json::number, time::iso8601, Period};
use crate::config::MetricsSettings;

/// PutMetricData: at most 1000 `MetricDatum` in one call.
pub const MAX_DATUMS_PER_CALL: usize = 1000;

/// The period as PutMetricData requests: `{"Namespace", "MetricData": [{"MetricName",
/// "Dimensions": [{"Name", "Value"}], "Timestamp", "Value", "Unit",
/// "StorageResolution"}]}`, each with at most [`MAX_DATUMS_PER_CALL`] datums.
pub fn render(period: &Period, settings: &MetricsSettings) -> Vec<Value> {
    let zone = settings.availability_zone.as_deref();
    let timestamp = iso8601(period.start);
    let resolution = if period.high_resolution() { 1 } else { 60 };
    let mut datums = Vec::new();
    for m in &period.metrics {
        for set in m.dimension_sets(zone) {
            let dims: Vec<Value> = set
                .iter()
                .map(|(k, v)| json!({"Name": k, "Value": v}))
                .collect();
            datums.push(json!({
                "MetricName": m.name,
                "Dimensions": dims,
                "Timestamp": timestamp,
                "Value": number(m.value),
                "Unit": m.unit.as_str(),
                "StorageResolution": resolution,
            }));
        }
    }
    datums
        .chunks(MAX_DATUMS_PER_CALL)
        .map(|chunk| json!({"Namespace": settings.namespace, "MetricData": chunk}))
        .collect()
}
