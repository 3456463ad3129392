//! CloudWatch Embedded Metric Format: one JSON document per line.
//!
//! Each document has one directive (`_aws.CloudWatchMetrics[0]`) with one dimension set,
//! and carries the dimension values and metric values as root members: one document per
//! distinct combination of dimension values, split further when more than
//! [`MAX_METRICS_PER_DIRECTIVE`] metrics share one. Every document also carries the
//! host's fleet fingerprint as the property `FleetFingerprint`.

use serde_json::{Map, Value};

use super::{json::number, time::epoch_millis, Metric, Period};
use crate::config::MetricsSettings;

/// EMF: at most 100 metrics in one directive.
pub const MAX_METRICS_PER_DIRECTIVE: usize = 100;
/// EMF: at most 30 dimensions in one dimension set.
pub const MAX_DIMENSIONS_PER_SET: usize = 30;

/// Dimension values (name, value) and the metrics published with exactly them.
type Group<'a> = (Vec<(&'static str, &'a str)>, Vec<&'a Metric>);

/// The period as EMF lines (without line terminators), in a stable order.
pub fn render(period: &Period, settings: &MetricsSettings) -> Vec<String> {
    let zone = settings.availability_zone.as_deref();
    // Dimension values → metrics, in first-seen order.
    let mut groups: Vec<Group<'_>> = Vec::new();
    for metric in &period.metrics {
        for set in metric.dimension_sets(zone) {
            match groups.iter_mut().find(|(dims, _)| *dims == set) {
                Some((_, metrics)) => metrics.push(metric),
                None => groups.push((set, vec![metric])),
            }
        }
    }
    let timestamp = epoch_millis(period.start);
    let mut lines = Vec::new();
    for (dims, metrics) in &groups {
        for chunk in metrics.chunks(MAX_METRICS_PER_DIRECTIVE) {
            let mut doc = document(
                timestamp,
                &settings.namespace,
                period.high_resolution(),
                dims,
                chunk,
            );
            // A property, not a metric or dimension: searchable in CloudWatch Logs
            // Insights, so a fleet's hosts can be compared (every one must show the same).
            if let Some(fleet) = &period.last.fleet {
                doc.insert("FleetFingerprint".into(), fleet.fingerprint.clone().into());
            }
            lines.push(Value::Object(doc).to_string());
        }
    }
    lines
}

fn document(
    timestamp: u64,
    namespace: &str,
    high_resolution: bool,
    dims: &[(&str, &str)],
    metrics: &[&Metric],
) -> Map<String, Value> {
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|m| {
            let mut d = Map::new();
            d.insert("Name".into(), m.name.into());
            d.insert("Unit".into(), m.unit.as_str().into());
            // 60 is the default; only high resolution needs saying.
            if high_resolution {
                d.insert("StorageResolution".into(), 1.into());
            }
            Value::Object(d)
        })
        .collect();
    let names: Vec<Value> = dims
        .iter()
        .take(MAX_DIMENSIONS_PER_SET)
        .map(|(k, _)| Value::from(*k))
        .collect();
    let mut directive = Map::new();
    directive.insert("Namespace".into(), namespace.into());
    directive.insert("Dimensions".into(), Value::Array(vec![Value::Array(names)]));
    directive.insert("Metrics".into(), Value::Array(definitions));
    let mut aws = Map::new();
    aws.insert("Timestamp".into(), timestamp.into());
    aws.insert(
        "CloudWatchMetrics".into(),
        Value::Array(vec![Value::Object(directive)]),
    );
    let mut doc = Map::new();
    doc.insert("_aws".into(), Value::Object(aws));
    for (k, v) in dims {
        doc.insert((*k).into(), (*v).into());
    }
    for m in metrics {
        doc.insert(m.name.into(), number(m.value));
    }
    doc
}
