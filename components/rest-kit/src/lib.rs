//! What every producer component shares, so a component is only its policy:
//!
//! - [`bindings`]: the `votes:platform/producer` world, generated once; components export it with
//!   [`export_producer!`].
//! - [`http`]: reading a request body within a limit, and sending a reply.
//! - [`votes`]: `POST /votes` and `POST /votes/batch` over the shared vote-core rules, with a
//!   [`votes::Policy`] hook for extra rules.

pub mod http;
pub mod votes;

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
