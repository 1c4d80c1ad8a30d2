//! The election-ballot producer (seed 004, the 2023 general election): `POST /ballots` with
//! `{"sede", "municipio", "departamento", "papeleta", "partido"}`; every ballot that passes
//! [`rules`] is published on `ballots`.

mod rules;

use rest_kit::workload::Workload;

/// The workload this component serves.
const BALLOTS: Workload = Workload {
    name: "ballots",
    topic: "ballots",
    path: "/ballots",
    producer: concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION")),
    rules: rules::ballot,
};

struct BallotRest;

rest_kit::export_workload!(BallotRest, BALLOTS);
