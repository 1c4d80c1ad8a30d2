//! What a weather report is (seed 003): a municipality and a condition among the seed's (any
//! case, stored lower-case), a temperature in °C and a relative humidity in percent.

use std::ops::RangeInclusive;

use rest_kit::fields::{FieldError, Fields};
use vote_platform::event::{Data, Value};

/// The municipalities the seed reports on.
pub const MUNICIPALITIES: [&str; 4] = ["mixco", "guatemala", "amatitlan", "chinautla"];
/// The sky conditions.
pub const CONDITIONS: [&str; 4] = ["sunny", "cloudy", "rainy", "foggy"];
/// Plausible temperatures in the Guatemala valley, °C.
pub const TEMPERATURE: RangeInclusive<i64> = -10..=50;
/// Relative humidity, percent.
pub const HUMIDITY: RangeInclusive<i64> = 0..=100;
/// The fields of a report.
pub const FIELDS: [&str; 4] = ["municipality", "temperature", "humidity", "weather"];

/// The event fields of a posted report, or the first field that is wrong.
pub fn report(body: &[u8]) -> Result<Data, FieldError> {
    let fields = Fields::parse(body, &FIELDS)?;
    Ok(Data::from([
        ("municipality".to_owned(), Value::Text(fields.choice("municipality", &MUNICIPALITIES)?.to_owned())),
        ("temperature".to_owned(), Value::Integer(fields.integer("temperature", TEMPERATURE)?)),
        ("humidity".to_owned(), Value::Integer(fields.integer("humidity", HUMIDITY)?)),
        ("weather".to_owned(), Value::Text(fields.choice("weather", &CONDITIONS)?.to_owned())),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        report(body.as_bytes()).unwrap_err().field
    }

    #[test]
    fn a_report_is_normalised() {
        let data = report(br#"{"municipality":"  MIXCO ","temperature":"24","humidity":65,"weather":"Rainy"}"#).unwrap();
        assert_eq!(data["municipality"], Value::Text("mixco".into()));
        assert_eq!(data["temperature"], Value::Integer(24));
        assert_eq!(data["humidity"], Value::Integer(65));
        assert_eq!(data["weather"], Value::Text("rainy".into()));
        let accented = report(br#"{"municipality":"Amatitl\u00e1n","temperature":-10,"humidity":"100","weather":"FOGGY"}"#).unwrap();
        assert_eq!(accented["municipality"], Value::Text("amatitlan".into()));
    }

    #[test]
    fn every_bad_field_is_named() {
        let ok = r#""municipality":"mixco","temperature":20,"humidity":50,"weather":"sunny""#;
        assert_eq!(field_of(&format!(r#"{{{ok},"wind":3}}"#)), "wind");
        assert_eq!(field_of(r#"{"temperature":20,"humidity":50,"weather":"sunny"}"#), "municipality");
        for (field, value) in [
            ("municipality", r#""antigua""#),
            ("municipality", "7"),
            ("temperature", "51"),
            ("temperature", r#""-11""#),
            ("temperature", "20.5"),
            ("temperature", "true"),
            ("humidity", "101"),
            ("humidity", r#""-1""#),
            ("humidity", "[50]"),
            ("weather", r#""snowy""#),
            ("weather", r#""""#),
        ] {
            let body = ok.replace(&format!(r#""{field}":{}"#, ok_value(field)), &format!(r#""{field}":{value}"#));
            assert_ne!(body, ok, "{field}");
            assert_eq!(field_of(&format!("{{{body}}}")), field, "{field} = {value}");
        }
        assert_eq!(field_of("[1]"), "body");
    }

    fn ok_value(field: &str) -> &'static str {
        match field {
            "municipality" => r#""mixco""#,
            "temperature" => "20",
            "humidity" => "50",
            _ => r#""sunny""#,
        }
    }

    #[test]
    fn every_shipped_sample_passes() {
        let samples: Vec<serde_json::Value> = serde_json::from_str(include_str!("../../../data/weather.json")).unwrap();
        assert!(samples.len() >= 200);
        for sample in samples {
            assert!(report(sample.to_string().as_bytes()).is_ok(), "{sample}");
        }
    }
}
