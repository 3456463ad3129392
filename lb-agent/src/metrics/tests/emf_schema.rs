//! The independent EMF check: the EMF JSON schema (the shape AWS documents), validated with
//! the `jsonschema` crate as a Draft 7 schema, plus the rule a schema cannot state: every
//! dimension and metric a directive names is a root member of the right type.

use serde_json::{json, Value};

/// Every unit CloudWatch accepts.
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

fn schema() -> Value {
    json!({
      "type": "object",
      "required": ["_aws"],
      "properties": {
        "_aws": {
          "type": "object",
          "required": ["Timestamp", "CloudWatchMetrics"],
          "properties": {
            "Timestamp": {"type": "integer", "minimum": 0},
            "CloudWatchMetrics": {
              "type": "array",
              "minItems": 1,
              "items": {
                "type": "object",
                "required": ["Namespace", "Dimensions", "Metrics"],
                "properties": {
                  "Namespace": {"type": "string", "minLength": 1, "maxLength": 255,
                                "pattern": "^[^:].*$"},
                  "Dimensions": {
                    "type": "array",
                    "items": {"type": "array", "minItems": 0, "maxItems": 30,
                              "items": {"type": "string", "minLength": 1, "maxLength": 250}}
                  },
                  "Metrics": {
                    "type": "array",
                    "minItems": 0,
                    "maxItems": 100,
                    "items": {
                      "type": "object",
                      "required": ["Name"],
                      "additionalProperties": false,
                      "properties": {
                        "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                        "Unit": {"type": "string", "enum": UNITS},
                        "StorageResolution": {"type": "integer", "enum": [1, 60]}
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    })
}

/// Checks EMF `lines` (empty ones skipped), panicking with the reason and the line at the
/// first that fails; the number of documents.
pub(super) fn emf_check(lines: &[String]) -> usize {
    let schema = schema();
    if let Err(e) = jsonschema::draft7::meta::validate(&schema) {
        panic!("the EMF schema is not a valid Draft 7 schema: {e}");
    }
    let validator = jsonschema::draft7::new(&schema)
        .unwrap_or_else(|e| panic!("the EMF schema does not compile: {e}"));
    let mut n = 0;
    for line in lines.iter().flat_map(|text| text.split('\n')) {
        if line.is_empty() {
            continue;
        }
        let doc: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "invalid EMF: {}\n{line}",
            errors.join("; ")
        );
        for directive in items(&doc["_aws"]["CloudWatchMetrics"]) {
            let keys = items(&directive["Dimensions"]).iter().flat_map(items);
            for key in keys.filter_map(Value::as_str) {
                assert!(
                    doc.get(key).is_some_and(Value::is_string),
                    "dimension {key} is not a root string member: {line}"
                );
            }
            for metric in items(&directive["Metrics"]) {
                let name = metric["Name"].as_str().unwrap_or_default();
                // A boolean is no metric value: serde_json keeps it apart from numbers.
                assert!(
                    doc.get(name).is_some_and(Value::is_number),
                    "metric {name} is not a root number member: {line}"
                );
            }
        }
        n += 1;
    }
    n
}

/// The elements of a JSON array; none for anything else (the schema has already said
/// which members are arrays).
fn items(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}
