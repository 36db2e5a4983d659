//! Where a subscription resumes after a lost connection. Before its first alert that is the position the server
//! reported in the stream's `falconet-position` header (docs/server.md), so a subscription started at "now" and
//! cut before any alert resumes where it started instead of at a new "now", which would miss what was
//! published meanwhile. After that it is the last alert's cursor.

use tonic::metadata::MetadataMap;

use crate::{Cursor, Start};

/// The initial-metadata key of a stream's start position: `EPOCH:SEQ`, the cursor just before the first alert
/// the stream delivers.
pub const POSITION_HEADER: &str = "falconet-position";

/// Reads a `falconet-position` value. Unlike an alert's cursor (which `--from` takes), the sequence may be 0:
/// the position before a run's first alert. The error says what was wrong, for a warning.
pub fn parse_position(s: &str) -> Result<Cursor, String> {
    let bad = || format!("malformed {POSITION_HEADER} {s:?}; expected EPOCH:SEQ");
    let (epoch, seq) = s.rsplit_once(':').ok_or_else(bad)?;
    if epoch.is_empty() || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let sequence = seq
        .parse()
        .map_err(|e| format!("malformed {POSITION_HEADER} {s:?}: {e}"))?;
    Ok(Cursor {
        epoch: epoch.to_string(),
        sequence,
    })
}

/// The position in a stream's initial metadata: None if absent, Some(Err) if present but malformed.
pub(crate) fn position_of(md: &MetadataMap) -> Option<Result<Cursor, String>> {
    let value = md.get(POSITION_HEADER)?;
    Some(match value.to_str() {
        Ok(s) => parse_position(s),
        Err(_) => Err(format!(
            "malformed {POSITION_HEADER} {:?}; expected EPOCH:SEQ",
            String::from_utf8_lossy(value.as_bytes())
        )),
    })
}

/// A subscription's progress across reconnects: where the next stream starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resume {
    pub(crate) from: Start,
}

impl Resume {
    /// Records the position a stream reported. It becomes the resume point unless it lies behind the current
    /// cursor of the same run (resuming never goes back); one from another run replaces a stale cursor.
    pub(crate) fn started_at(&mut self, p: Cursor) {
        if let Start::After(last) = &self.from {
            if last.epoch == p.epoch && p.sequence < last.sequence {
                return;
            }
        }
        self.from = Start::After(p);
    }

    /// Records an alert's cursor: the next stream starts right after it.
    pub(crate) fn delivered(&mut self, c: Option<&Cursor>) {
        if let Some(c) = c {
            self.from = Start::After(c.clone());
        }
    }

    /// True while reconnecting could miss alerts: started at "now" with neither an alert's cursor nor a
    /// reported position (a server without the header, such as Falco, leaves this gap).
    pub(crate) fn blind_spot(&self) -> bool {
        self.from == Start::Now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn cur(epoch: &str, sequence: u64) -> Cursor {
        Cursor {
            epoch: epoch.into(),
            sequence,
        }
    }

    #[test]
    fn position_accepts_sequence_zero() {
        assert_eq!(parse_position("3f2a9c:0"), Ok(cur("3f2a9c", 0)));
        assert_eq!(parse_position("3f2a9c:42"), Ok(cur("3f2a9c", 42)));
        assert_eq!(parse_position("a:b:7"), Ok(cur("a:b", 7)));
        assert_eq!(parse_position("e:0000000012"), Ok(cur("e", 12)));
    }

    #[test]
    fn malformed_positions_are_errors_naming_the_header() {
        for s in [
            "",
            "epoch",
            ":5",
            "e:",
            "e:-1",
            "e:+1",
            "e: 1",
            "e:1x",
            "e:0x10",
            "e:18446744073709551616",
        ] {
            let err = parse_position(s).expect_err(s);
            assert!(err.contains(POSITION_HEADER), "{s:?}: {err}");
        }
    }

    #[test]
    fn from_flag_still_rejects_sequence_zero() {
        assert!("3f2a9c:0".parse::<Start>().is_err());
        assert!("3f2a9c:0".parse::<Cursor>().is_err());
    }

    #[test]
    fn position_is_read_from_metadata() {
        let mut md = MetadataMap::new();
        assert!(position_of(&md).is_none());
        md.insert(POSITION_HEADER, MetadataValue::from_static("ep:0"));
        assert_eq!(position_of(&md), Some(Ok(cur("ep", 0))));
        md.insert(POSITION_HEADER, MetadataValue::from_static("garbage"));
        assert!(matches!(position_of(&md), Some(Err(e)) if e.contains("garbage")));
    }

    #[test]
    fn position_is_kept_until_an_alert_replaces_it() {
        let mut r = Resume { from: Start::Now };
        assert!(r.blind_spot());
        r.started_at(cur("e1", 0));
        assert!(!r.blind_spot());
        let start = r.from.to_proto();
        assert!(
            matches!(start.at, Some(crate::api::falconet::v1::start::At::After(ref c)) if c.epoch == "e1" && c.sequence == 0),
            "reconnect would not send start.after e1:0: {start:?}"
        );
        r.delivered(Some(&cur("e1", 5)));
        r.delivered(None); // an alert without a cursor (a Falco server) moves nothing
        r.started_at(cur("e1", 3)); // behind the last alert of the same run: ignored
        assert_eq!(r.from, Start::After(cur("e1", 5)));
        r.started_at(cur("e1", 9));
        assert_eq!(r.from, Start::After(cur("e1", 9)));
        r.started_at(cur("e2", 1)); // a new run: the old cursor is stale
        assert_eq!(r.from, Start::After(cur("e2", 1)));
    }

    #[test]
    fn oldest_has_no_blind_spot() {
        assert!(!Resume {
            from: Start::Oldest
        }
        .blind_spot());
    }
}
