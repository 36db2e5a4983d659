//! The alert as clients see it, and its JSON form (docs/alert-json.md), written by hand in a fixed key order so
//! that the Rust example prints what the Python and Go clients print for the same alert.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::api::falco::outputs::Response;
use crate::Error;

/// A position in one run of the server's hub; printed as `EPOCH:SEQUENCE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: String,
    pub sequence: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.sequence)
    }
}

impl std::str::FromStr for Cursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Config(format!(
                "invalid cursor {s:?}; expected EPOCH:SEQUENCE, e.g. 3f2a9c:42"
            ))
        };
        let (epoch, seq) = s.rsplit_once(':').ok_or_else(bad)?;
        let sequence: u64 = seq.parse().map_err(|_| bad())?;
        if epoch.is_empty() || sequence < 1 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(Cursor {
            epoch: epoch.to_string(),
            sequence,
        })
    }
}

/// One alert, decoded from `falco.outputs.response`.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: i128,
    pub rule: String,
    /// Falco's priority number (0 Emergency .. 7 Debug).
    pub priority: i32,
    pub source: String,
    pub hostname: String,
    pub output: String,
    /// Each value as JSON text: a JSON string, or the number, boolean or null the server marked as JSON.
    pub output_fields: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub cursor: Option<Cursor>,
}

const PRIORITY_NAMES: [&str; 8] = [
    "Emergency",
    "Alert",
    "Critical",
    "Error",
    "Warning",
    "Notice",
    "Informational",
    "Debug",
];
const SOURCE_NAMES: [&str; 4] = ["syscall", "k8s_audit", "internal", "plugin"];

/// The spelling Falco uses for a priority number ("Warning", "Informational", ...).
pub fn priority_name(p: i32) -> String {
    usize::try_from(p)
        .ok()
        .and_then(|i| PRIORITY_NAMES.get(i))
        .map_or_else(|| format!("Priority({p})"), |s| (*s).to_string())
}

/// Reads any spelling Falco accepts for a priority (any case; `info` too).
pub fn parse_priority(s: &str) -> Result<i32, Error> {
    let key = s.trim().to_ascii_lowercase();
    if key == "info" {
        return Ok(6);
    }
    PRIORITY_NAMES
        .iter()
        .position(|n| n.to_ascii_lowercase() == key)
        .map(|i| i as i32)
        .ok_or_else(|| {
            Error::Config(format!(
                "unknown priority {s:?}; expected one of {} (any case), or Info",
                PRIORITY_NAMES.join(", ")
            ))
        })
}

/// `s` as a JSON string, as the Python SDK's canonical line writes it (json.dumps with ensure_ascii=False, then
/// falconet.model.text.json_safe): DEL, the C1 controls, U+2028/U+2029 and the bidi controls are escaped too,
/// since JSON would leave them raw for a terminal to interpret.
fn json_str(s: &str) -> String {
    let out = serde_json::to_string(s).expect("a string always serialises");
    if !out.chars().any(needs_escape) {
        return out;
    }
    let mut safe = String::with_capacity(out.len() + 16);
    for c in out.chars() {
        if needs_escape(c) {
            let _ = write!(safe, "\\u{:04x}", c as u32);
        } else {
            safe.push(c);
        }
    }
    safe
}

fn needs_escape(c: char) -> bool {
    matches!(c as u32, 0x7f..=0x9f | 0x2028 | 0x2029 | 0x202a..=0x202e | 0x2066..=0x2069)
}

impl Alert {
    /// Decodes any response the wire can carry (a field marked JSON that does not hold a finite JSON scalar is
    /// kept as a string), so one odd alert never ends a subscription; the Result is kept for compatibility.
    pub fn from_proto(r: Response) -> Result<Alert, Error> {
        let mut fields = BTreeMap::new();
        for (key, value) in r.output_fields {
            if r.output_fields_json.iter().any(|k| *k == key) {
                match serde_json::from_str::<serde_json::Value>(&value) {
                    Ok(serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_)) => {
                        fields.insert(key, value.trim().to_string());
                    }
                    // Not a finite JSON scalar (NaN, 1e400, an object, not JSON): a client must survive any
                    // alert the wire can carry, so the value is kept as the string it is.
                    _ => {
                        let text = json_str(&value);
                        fields.insert(key, text);
                    }
                }
            } else {
                fields.insert(key, json_str(&value));
            }
        }
        let source = if r.source.is_empty() {
            // A Falco server older than 0.31 sends only the deprecated enum.
            #[allow(deprecated)]
            let n = r.source_deprecated;
            SOURCE_NAMES
                .get(n as usize)
                .copied()
                .unwrap_or("plugin")
                .to_string()
        } else {
            r.source
        };
        let time_ns = r.time.map_or(0, |t| {
            i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
        });
        Ok(Alert {
            time_ns,
            rule: r.rule,
            priority: r.priority,
            source,
            hostname: r.hostname,
            output: r.output,
            output_fields: fields,
            tags: r.tags,
            cursor: r.cursor.map(|c| Cursor {
                epoch: c.epoch,
                sequence: c.sequence,
            }),
        })
    }

    /// The alert JSON, on one line.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256 + self.output.len());
        let _ = write!(
            out,
            "{{\"time\":{},\"rule\":{},\"priority\":{},\"source\":{},\"hostname\":{},\"output\":{},\"output_fields\":{{",
            json_str(&format_time(self.time_ns)),
            json_str(&self.rule),
            json_str(&priority_name(self.priority)),
            json_str(&self.source),
            json_str(&self.hostname),
            json_str(&self.output),
        );
        for (i, (k, v)) in self.output_fields.iter().enumerate() {
            let _ = write!(out, "{}{}:{}", if i > 0 { "," } else { "" }, json_str(k), v);
        }
        out.push_str("},\"tags\":[");
        for (i, t) in self.tags.iter().enumerate() {
            let _ = write!(out, "{}{}", if i > 0 { "," } else { "" }, json_str(t));
        }
        out.push(']');
        if let Some(c) = &self.cursor {
            let _ = write!(
                out,
                ",\"cursor\":{{\"epoch\":{},\"sequence\":{}}}",
                json_str(&c.epoch),
                c.sequence
            );
        }
        out.push('}');
        out
    }
}

/// RFC 3339 in UTC with nine fraction digits, as Falco prints `time`: 2023-05-25T13:44:05.478445995Z.
pub fn format_time(time_ns: i128) -> String {
    let secs = time_ns.div_euclid(1_000_000_000);
    let nanos = time_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400) as i64;
    let sod = secs.rem_euclid(86_400) as i64;
    // Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared vectors (sdk/python/testdata/alert_vectors.json): each `proto` must print as its `line`.
    #[test]
    fn vectors_print_their_canonical_line() {
        use crate::api::falconet::v1::Cursor as PbCursor;
        use serde_json::Value;
        let doc: Value =
            serde_json::from_str(include_str!("../../python/testdata/alert_vectors.json")).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert!(!vectors.is_empty());
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().map_or(vec![], |a| {
                a.iter().map(|s| s.as_str().unwrap().to_string()).collect()
            })
        };
        for v in vectors {
            let p = &v["proto"];
            #[allow(deprecated)]
            let r = Response {
                time: Some(prost_types::Timestamp {
                    seconds: p["time"]["seconds"].as_i64().unwrap(),
                    nanos: p["time"]["nanos"].as_i64().unwrap() as i32,
                }),
                priority: p["priority"].as_i64().unwrap() as i32,
                source_deprecated: p["source_deprecated"].as_i64().unwrap() as i32,
                rule: p["rule"].as_str().unwrap().into(),
                output: p["output"].as_str().unwrap().into(),
                output_fields: p["output_fields"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                hostname: p["hostname"].as_str().unwrap().into(),
                tags: strings(&p["tags"]),
                source: p["source"].as_str().unwrap().into(),
                cursor: p["cursor"].as_object().map(|c| PbCursor {
                    epoch: c["epoch"].as_str().unwrap().into(),
                    sequence: c["sequence"].as_u64().unwrap(),
                }),
                output_fields_json: strings(&p["output_fields_json"]),
            };
            let got = Alert::from_proto(r).unwrap().to_json();
            assert_eq!(got, v["line"].as_str().unwrap(), "{}", v["name"]);
        }
    }

    #[test]
    fn any_wire_alert_decodes_and_prints_valid_json_without_controls() {
        let fields = [("bad", "not json"), ("nan", "NaN"), ("big", "1e400"), ("obj", "{\"a\":1}")];
        let r = Response {
            time: Some(prost_types::Timestamp { seconds: i64::MAX, nanos: -5 }),
            rule: "r".into(),
            output: "evil\u{1b}]0;x\u{7}\u{9b}2J\nFAKE".into(),
            priority: 99,
            output_fields: fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            output_fields_json: fields.iter().map(|(k, _)| k.to_string()).collect(),
            ..Default::default()
        };
        let line = Alert::from_proto(r).unwrap().to_json();
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["output_fields"]["nan"], "NaN");
        assert_eq!(doc["output_fields"]["big"], "1e400");
        assert_eq!(doc["output_fields"]["bad"], "not json");
        assert!(!line.chars().any(|c| (c as u32) < 0x20 || needs_escape(c)), "{line}");
        assert_eq!(json_str("\u{7f}é\u{2028}\u{9b}"), "\"\\u007fé\\u2028\\u009b\"");
    }

    #[test]
    fn time_format_matches_falco() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_time(1_685_022_245_478_445_995),
            "2023-05-25T13:44:05.478445995Z"
        );
        assert_eq!(
            format_time(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }
}
