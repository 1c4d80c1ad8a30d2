//! Call deadlines: the client's `grpc-timeout` header, capped by the producer's own limit.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// The deadline a client asked for in its `grpc-timeout` header (`1` to `8` digits and a unit:
/// `H`, `M`, `S`, `m`, `u`, `n`), or `None` when it sent none or one that does not parse.
pub fn client_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The deadline of one call: the producer's `limit`, or the client's, whichever is sooner.
pub fn call_deadline(metadata: &MetadataMap, limit: Duration) -> Duration {
    client_timeout(metadata).map_or(limit, |asked| asked.min(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().unwrap());
        metadata
    }

    #[test]
    fn reads_every_unit_and_caps_by_the_limit() {
        assert_eq!(client_timeout(&with("250m")), Some(Duration::from_millis(250)));
        assert_eq!(client_timeout(&with("2S")), Some(Duration::from_secs(2)));
        assert_eq!(client_timeout(&with("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(client_timeout(&with("5u")), Some(Duration::from_micros(5)));
        assert_eq!(call_deadline(&with("1H"), Duration::from_secs(10)), Duration::from_secs(10));
        assert_eq!(call_deadline(&with("100m"), Duration::from_secs(10)), Duration::from_millis(100));
        assert_eq!(call_deadline(&MetadataMap::new(), Duration::from_secs(10)), Duration::from_secs(10));
    }

    #[test]
    fn ignores_what_does_not_parse() {
        for bad in ["", "m", "10", "10x", "123456789S", "-1S"] {
            assert_eq!(client_timeout(&with(bad)), None, "{bad:?}");
        }
    }
}
