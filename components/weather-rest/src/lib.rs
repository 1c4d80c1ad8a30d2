//! The weather-report producer (seed 003): `POST /tweets` with `{"municipality", "temperature",
//! "humidity", "weather"}`; every report that passes [`rules`] is published on `weather`.

mod rules;

use rest_kit::workload::Workload;

/// The workload this component serves.
const WEATHER: Workload = Workload {
    name: "weather",
    topic: "weather",
    path: "/tweets",
    producer: concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION")),
    rules: rules::report,
};

struct WeatherRest;

rest_kit::export_workload!(WeatherRest, WEATHER);
