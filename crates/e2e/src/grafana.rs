//! The Grafana files in `grafana/` as the dashboard contract test reads them: the dashboards, their
//! panels and queries, the provisioned data sources, and the structural and schema checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The `schemaVersion` Grafana 11/12 dashboards are written for.
pub const SCHEMA_VERSION: u64 = 41;
/// Grafana's grid is 24 columns wide.
pub const GRID_COLUMNS: u64 = 24;
/// Grafana's dashboard JSON schema, relative to the repository root (see its README).
pub const SCHEMA_PATH: &str = "../shared/schemas/grafana/dashboard.jsonschema.json";

/// The repository's `grafana/` directory.
pub fn grafana_dir() -> PathBuf {
    vote_stack::config::repo_root().join("grafana")
}

/// A provisioned data source: its fixed uid and plugin type.
#[derive(Debug, Clone, Deserialize)]
pub struct DataSource {
    pub name: String,
    pub uid: String,
    #[serde(rename = "type")]
    pub plugin: String,
    pub url: String,
}

#[derive(Deserialize)]
struct DataSourceFile {
    #[serde(default)]
    datasources: Vec<DataSource>,
}

/// Every data source of `grafana/provisioning/datasources/*.yaml`.
pub fn provisioned_datasources() -> Vec<DataSource> {
    yaml_files(&grafana_dir().join("provisioning/datasources"))
        .into_iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let file: DataSourceFile = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            file.datasources
        })
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

/// One dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub file: PathBuf,
    pub json: Value,
}

/// Every dashboard of `grafana/dashboards/*.json`.
pub fn dashboards() -> Vec<Dashboard> {
    let dir = grafana_dir().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let json = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            Dashboard { file, json }
        })
        .collect()
}

/// A panel's query, as the data source it names would run it.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// A Prometheus target's `expr`.
    PromQl(String),
    /// A redis-datasource target: a `command` with `keyName` (and `field`), or a CLI `query`.
    Redis(Value),
}

/// One query of one panel, with where it comes from for messages.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub place: String,
    pub datasource: String,
    pub query: Query,
}

impl Dashboard {
    pub fn name(&self) -> String {
        self.file.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Every panel, rows and the panels nested in collapsed rows included.
    pub fn panels(&self) -> Vec<&Value> {
        let mut all = Vec::new();
        for panel in self.json["panels"].as_array().into_iter().flatten() {
            all.push(panel);
            all.extend(panel["panels"].as_array().into_iter().flatten());
        }
        all
    }

    fn place(&self, panel: &Value) -> String {
        format!("{} panel {} {:?}", self.name(), panel["id"], panel["title"].as_str().unwrap_or(""))
    }

    /// Every query of every panel, each with the data source uid it runs on.
    pub fn queries(&self, sources: &[DataSource]) -> Vec<PanelQuery> {
        let mut queries = Vec::new();
        for panel in self.panels() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let uid = target["datasource"]["uid"].as_str().or(panel["datasource"]["uid"].as_str()).unwrap_or("").to_owned();
                let plugin = sources.iter().find(|s| s.uid == uid).map(|s| s.plugin.as_str()).unwrap_or("");
                let place = format!("{} target {}", self.place(panel), target["refId"].as_str().unwrap_or("?"));
                let query = match plugin {
                    "prometheus" => Query::PromQl(target["expr"].as_str().unwrap_or("").to_owned()),
                    _ => Query::Redis(target.clone()),
                };
                queries.push(PanelQuery { place, datasource: uid, query });
            }
        }
        queries
    }

    /// What is wrong with the dashboard's structure: schema version, unique ids, a layout without
    /// overlaps inside the 24-column grid, and panels (and targets) that name only provisioned
    /// data sources of the right type.
    pub fn structural_problems(&self, sources: &[DataSource]) -> Vec<String> {
        let mut problems = Vec::new();
        if self.json["schemaVersion"].as_u64() != Some(SCHEMA_VERSION) {
            problems.push(format!("{}: schemaVersion is {}, not {SCHEMA_VERSION}", self.name(), self.json["schemaVersion"]));
        }
        if self.json["uid"].as_str().unwrap_or("").is_empty() {
            problems.push(format!("{}: no fixed dashboard uid", self.name()));
        }
        let mut ids: HashMap<u64, usize> = HashMap::new();
        let mut boxes = Vec::new();
        for panel in self.panels() {
            let place = self.place(panel);
            match panel["id"].as_u64() {
                Some(id) => *ids.entry(id).or_default() += 1,
                None => problems.push(format!("{place}: no fixed numeric id")),
            }
            let grid = &panel["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64());
            match (x, y, w, h) {
                (Some(x), Some(y), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= GRID_COLUMNS => boxes.push((place.clone(), x, y, w, h)),
                _ => problems.push(format!("{place}: gridPos {grid} is not a box inside the {GRID_COLUMNS}-column grid")),
            }
            if panel["type"] == "row" {
                continue;
            }
            if panel["targets"].as_array().is_none_or(|t| t.is_empty()) {
                problems.push(format!("{place}: no query"));
            }
            let mut refs = vec![&panel["datasource"]];
            refs.extend(panel["targets"].as_array().into_iter().flatten().map(|t| &t["datasource"]).filter(|d| !d.is_null()));
            for reference in refs {
                let uid = reference["uid"].as_str().unwrap_or("");
                match sources.iter().find(|s| s.uid == uid) {
                    None => problems.push(format!("{place}: data source {reference} is not provisioned")),
                    Some(source) if reference["type"].as_str().is_some_and(|t| t != source.plugin) => {
                        problems.push(format!("{place}: data source {uid} is of type {}, not {}", source.plugin, reference["type"]))
                    }
                    Some(_) => {}
                }
            }
        }
        for (id, count) in ids {
            if count > 1 {
                problems.push(format!("{}: panel id {id} is used {count} times", self.name()));
            }
        }
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                let overlap = a.1 < b.1 + b.3 && b.1 < a.1 + a.3 && a.2 < b.2 + b.4 && b.2 < a.2 + a.4;
                if overlap {
                    problems.push(format!("{} overlaps {}", a.0, b.0));
                }
            }
        }
        problems
    }
}

/// Grafana's dashboard schema from `../shared/schemas` beside the repository (or beside one of
/// its parent directories, for a git worktree), or `None` when there is none.
pub fn dashboard_schema() -> Option<Value> {
    let relative = SCHEMA_PATH.trim_start_matches("../");
    let root = vote_stack::config::repo_root();
    let path = root.ancestors().skip(1).map(|dir| dir.join(relative)).find(|path| path.is_file())?;
    let text = std::fs::read_to_string(&path).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Every way `dashboard` breaks the schema.
pub fn schema_problems(schema: &Value, dashboard: &Dashboard) -> Vec<String> {
    let validator = jsonschema::draft7::new(schema).expect("the Grafana dashboard schema compiles");
    validator.iter_errors(&dashboard.json).map(|error| format!("{}: {error} at {}", dashboard.name(), error.instance_path())).collect()
}

/// A panel's PromQL with Grafana's variables replaced by concrete windows, as Grafana would
/// send it for a dashboard showing the last 15 minutes.
pub fn concrete_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m").replace("$__interval", "5s").replace("$__range", "15m")
}

/// The Redis command a redis-datasource target runs: a CLI `query` split like a shell does, or
/// a `command` on `keyName` (with `field` for `hget`).
pub fn redis_command(target: &Value) -> Result<Vec<String>, String> {
    let query = target["query"].as_str().unwrap_or("");
    if !query.is_empty() {
        return shlex::split(query).filter(|words| !words.is_empty()).ok_or_else(|| format!("query {query:?} does not split into words"));
    }
    let command = target["command"].as_str().unwrap_or("");
    let key = target["keyName"].as_str().unwrap_or("");
    match command {
        "get" | "hgetall" | "hkeys" | "hlen" | "llen" | "scard" | "smembers" | "type" | "ttl" | "xlen" if !key.is_empty() => {
            Ok(vec![command.to_uppercase(), key.to_owned()])
        }
        // The plugin sends `ZRANGE key min max [zrangeQuery] WITHSCORES`.
        "zrange" if !key.is_empty() => {
            let mut words = vec!["ZRANGE".to_owned(), key.to_owned(), target["min"].as_str().unwrap_or("").to_owned(), target["max"].as_str().unwrap_or("").to_owned()];
            words.extend(target["zrangeQuery"].as_str().filter(|q| !q.is_empty()).map(str::to_owned));
            words.push("WITHSCORES".to_owned());
            Ok(words)
        }
        "hget" if !key.is_empty() => Ok(vec!["HGET".into(), key.to_owned(), target["field"].as_str().unwrap_or("").to_owned()]),
        _ => Err(format!("command {command:?} on key {key:?} is not one the redis-datasource runs with a key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sources() -> Vec<DataSource> {
        vec![DataSource { name: "P".into(), uid: "p".into(), plugin: "prometheus".into(), url: String::new() }]
    }

    fn dashboard(panels: Value) -> Dashboard {
        Dashboard { file: "t.json".into(), json: json!({ "uid": "t", "schemaVersion": 41, "panels": panels }) }
    }

    fn panel(id: u64, x: u64, y: u64, datasource: &str) -> Value {
        json!({ "id": id, "type": "stat", "gridPos": { "x": x, "y": y, "w": 12, "h": 4 },
                "datasource": { "type": "prometheus", "uid": datasource }, "targets": [{ "refId": "A", "expr": "up" }] })
    }

    #[test]
    fn a_sound_dashboard_has_no_problems() {
        assert_eq!(dashboard(json!([panel(1, 0, 0, "p"), panel(2, 12, 0, "p"), panel(3, 0, 4, "p")])).structural_problems(&sources()), Vec::<String>::new());
    }

    #[test]
    fn overlaps_duplicate_ids_and_unknown_sources_are_reported() {
        let problems = dashboard(json!([panel(1, 0, 0, "p"), panel(1, 6, 2, "elsewhere")])).structural_problems(&sources());
        assert!(problems.iter().any(|p| p.contains("overlaps")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("id 1 is used 2 times")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("not provisioned")), "{problems:?}");
    }

    #[test]
    fn grafana_variables_become_concrete_windows() {
        assert_eq!(concrete_promql("rate(x[$__rate_interval]) + increase(y[$__range])"), "rate(x[1m]) + increase(y[15m])");
    }

    #[test]
    fn redis_targets_become_commands() {
        assert_eq!(redis_command(&json!({ "command": "hgetall", "keyName": "{votes}:bands" })).unwrap(), ["HGETALL", "{votes}:bands"]);
        assert_eq!(
            redis_command(&json!({ "command": "zrange", "keyName": "{votes}:bands", "min": "-20", "max": "-1" })).unwrap(),
            ["ZRANGE", "{votes}:bands", "-20", "-1", "WITHSCORES"]
        );
        assert_eq!(redis_command(&json!({ "type": "cli", "query": "LRANGE {votes}:recent 0 19" })).unwrap(), ["LRANGE", "{votes}:recent", "0", "19"]);
        assert!(redis_command(&json!({ "command": "get" })).is_err());
    }
}
