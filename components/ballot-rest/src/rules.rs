//! What a ballot is (seed 004): a polling place, municipality and party as bounded text, one of
//! Guatemala's 22 departments (accents and case optional, stored in proper form) and one of the
//! four ballot papers (stored lower-case).

use rest_kit::fields::{pick, FieldError, Fields};
use vote_platform::event::{Data, Value};

/// Guatemala's departments, as written.
pub const DEPARTMENTS: [&str; 22] = [
    "Alta Verapaz",
    "Baja Verapaz",
    "Chimaltenango",
    "Chiquimula",
    "El Progreso",
    "Escuintla",
    "Guatemala",
    "Huehuetenango",
    "Izabal",
    "Jalapa",
    "Jutiapa",
    "Petén",
    "Quetzaltenango",
    "Quiché",
    "Retalhuleu",
    "Sacatepéquez",
    "San Marcos",
    "Santa Rosa",
    "Sololá",
    "Suchitepéquez",
    "Totonicapán",
    "Zacapa",
];
/// Other names of a department: (name, department).
const ALSO_CALLED: [(&str, &str); 1] = [("El Quiché", "Quiché")];
/// The ballot papers of a general election.
pub const PAPELETAS: [&str; 4] = ["presidente", "diputados", "alcalde", "parlacen"];
/// The longest polling place, municipality or party name, in bytes.
pub const MAX_TEXT_BYTES: usize = 64;
/// The fields of a ballot.
pub const FIELDS: [&str; 5] = ["sede", "municipio", "departamento", "papeleta", "partido"];

/// The event fields of a posted ballot, or the first field that is wrong.
pub fn ballot(body: &[u8]) -> Result<Data, FieldError> {
    let fields = Fields::parse(body, &FIELDS)?;
    let text = |name: &str| fields.text(name, MAX_TEXT_BYTES).map(Value::Text);
    Ok(Data::from([
        ("sede".to_owned(), text("sede")?),
        ("municipio".to_owned(), text("municipio")?),
        ("departamento".to_owned(), Value::Text(department(&fields.text("departamento", MAX_TEXT_BYTES)?)?.to_owned())),
        ("papeleta".to_owned(), Value::Text(fields.choice("papeleta", &PAPELETAS)?.to_owned())),
        ("partido".to_owned(), text("partido")?),
    ]))
}

/// The department `given` names, by its name or another one.
fn department(given: &str) -> Result<&'static str, FieldError> {
    let alias: Vec<&'static str> = ALSO_CALLED.iter().map(|(name, _)| *name).collect();
    match pick("departamento", given, &alias) {
        Ok(name) => Ok(ALSO_CALLED.iter().find(|(alias, _)| *alias == name).map(|(_, department)| *department).unwrap_or(name)),
        Err(_) => pick("departamento", given, &DEPARTMENTS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(departamento: &str, papeleta: &str) -> String {
        serde_json::json!({
            "sede": "  Escuela Oficial Rural Mixta  No. 12 ",
            "municipio": "San Juan Sacatepéquez",
            "departamento": departamento,
            "papeleta": papeleta,
            "partido": "Semilla",
        })
        .to_string()
    }

    #[test]
    fn a_ballot_is_normalised() {
        let data = ballot(body("solola", "PRESIDENTE").as_bytes()).unwrap();
        assert_eq!(data["departamento"], Value::Text("Sololá".into()));
        assert_eq!(data["papeleta"], Value::Text("presidente".into()));
        assert_eq!(data["sede"], Value::Text("Escuela Oficial Rural Mixta No. 12".into()));
        assert_eq!(data["partido"], Value::Text("Semilla".into()));
        for (given, stored) in [("El Quiché", "Quiché"), ("el quiche", "Quiché"), ("QUICHÉ", "Quiché"), (" sacatepequez ", "Sacatepéquez"), ("Peten", "Petén")] {
            assert_eq!(ballot(body(given, "alcalde").as_bytes()).unwrap()["departamento"], Value::Text(stored.into()), "{given}");
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let field_of = |body: serde_json::Value| ballot(body.to_string().as_bytes()).unwrap_err().field;
        let ok: serde_json::Value = serde_json::from_str(&body("Guatemala", "diputados")).unwrap();
        let with = |field: &str, value: serde_json::Value| {
            let mut body = ok.clone();
            body[field] = value;
            body
        };
        assert_eq!(field_of(with("departamento", "Narnia".into())), "departamento");
        assert_eq!(field_of(with("papeleta", "senado".into())), "papeleta");
        assert_eq!(field_of(with("sede", "".into())), "sede");
        assert_eq!(field_of(with("municipio", "x".repeat(65).into())), "municipio");
        assert_eq!(field_of(with("partido", "UNE\u{0}".into())), "partido");
        assert_eq!(field_of(with("partido", 7.into())), "partido");
        assert_eq!(field_of(with("votos", 1.into())), "votos");
        let mut missing = ok.clone();
        missing.as_object_mut().unwrap().remove("municipio");
        assert_eq!(field_of(missing), "municipio");
        assert!(ballot(ok.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn every_shipped_sample_passes() {
        let samples: Vec<serde_json::Value> = serde_json::from_str(include_str!("../../../data/ballots.json")).unwrap();
        assert!(samples.len() >= 200);
        for sample in samples {
            assert!(ballot(sample.to_string().as_bytes()).is_ok(), "{sample}");
        }
    }
}
