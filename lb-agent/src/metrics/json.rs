//! Plain JSON of a period, for `lb-agent ctl metrics --format json`.

use serde_json::{json, Map, Value};

use super::{time::iso8601, Period};
use crate::config::MetricsSettings;

/// `{"namespace", "timestamp" (ISO 8601), "period_secs", "unhealthy_routed_flows_total",
/// "fleet": {"fingerprint", "route_tag", "announce": {vip: state}}, "metrics": [{"name",
/// "unit", "dimensions": {name: value}, "value"}]}`, with every dimension set a metric is
/// published under as its own entry.
pub fn render(period: &Period, settings: &MetricsSettings) -> Value {
    let zone = settings.availability_zone.as_deref();
    let mut metrics = Vec::new();
    for m in &period.metrics {
        for set in m.dimension_sets(zone) {
            let dims: Map<String, Value> = set
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect();
            metrics.push(json!({
                "name": m.name,
                "unit": m.unit.as_str(),
                "dimensions": dims,
                "value": number(m.value),
            }));
        }
    }
    json!({
        "namespace": settings.namespace,
        "timestamp": iso8601(period.start),
        "period_secs": period.length.as_secs(),
        "unhealthy_routed_flows_total": period.last.unhealthy_routed_flows,
        "fleet": period.last.fleet.as_ref().map(|f| json!({
            "fingerprint": f.fingerprint,
            "route_tag": f.route_tag,
            "announce": f.vips.iter().map(|(vip, state)| (vip.clone(), Value::from(*state))).collect::<Map<String, Value>>(),
        })),
        "metrics": metrics,
    })
}

/// A JSON number: an integer when the value is a whole number that f64 holds exactly.
pub(crate) fn number(value: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && (0.0..EXACT).contains(&value) {
        // Whole and below 2^53: the conversion is exact.
        Value::from(value as u64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}
