//! The weather-report producer (seed 003): `POST /tweets` with `{"municipality", "temperature",
//! "humidity", "weather"}`; every report that passes [`rules`] is published on `weather`.

mod rules;

use rest_kit::bindings::exports::wasi::http::incoming_handler::Guest;
use rest_kit::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use rest_kit::workload::{serve, Workload};

/// The workload this component serves.
const WEATHER: Workload = Workload {
    name: "weather",
    topic: "weather",
    path: "/tweets",
    producer: concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION")),
    rules: rules::report,
};

struct WeatherRest;

impl Guest for WeatherRest {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        serve(request, response_out, &WEATHER);
    }
}

rest_kit::bindings::export_producer!(WeatherRest);
