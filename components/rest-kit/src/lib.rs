//! What every producer component shares, so a component is only its policy:
//!
//! - [`bindings`]: the `votes:platform/producer` world, generated once; components export it with
//!   [`export_producer!`].
//! - [`http`]: reading a request body within a limit, and sending a reply.
//! - [`votes`]: `POST /votes` and `POST /votes/batch` over the shared vote-core rules, with a
//!   [`votes::Policy`] hook for extra rules.
//! - [`workload`]: `POST <path>` of a workload component, publishing a `vote_platform` envelope,
//!   with [`fields`] reading its body into checked fields.
//! - [`publishing`]: the publisher import's outcomes in vote-core's terms.

pub mod fields;
pub mod http;
pub mod publishing;
pub mod votes;
pub mod workload;

/// The generated bindings of the `producer` world.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "votes:platform/producer",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_producer",
        default_bindings_module: "rest_kit::bindings",
    });
}
