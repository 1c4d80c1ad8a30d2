//! What every producer component shares, so a component is only its policy:
//!
//! - [`bindings`]: the `votes:platform/producer` world, generated once; a component exports both
//!   its HTTP entry points (`wasi:http` and the one-call `handler`) with [`export_votes!`],
//!   [`export_workload!`] or [`export_component!`].
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

/// Exports a vote producer: `$policy` (a unit struct implementing [`votes::Policy`]) answers
/// through `wasi:http` and through the one-call `handler` alike.
#[macro_export]
macro_rules! export_votes {
    ($policy:ident) => {
        $crate::export_component!($policy, |request| $crate::votes::answer(request, &$policy));
    };
}

/// Exports a workload producer: `$component` serves the [`workload::Workload`] `$workload`
/// through `wasi:http` and through the one-call `handler` alike.
#[macro_export]
macro_rules! export_workload {
    ($component:ident, $workload:expr) => {
        $crate::export_component!($component, |request| $crate::workload::answer(request, &$workload));
    };
}

/// Exports `$component` with both entry points answered by `$answer`, an expression of
/// `$request` (a `&impl http::Received`) giving the [`http::Reply`].
#[macro_export]
macro_rules! export_component {
    ($component:ident, |$request:ident| $answer:expr) => {
        impl $crate::bindings::exports::wasi::http::incoming_handler::Guest for $component {
            fn handle(request: $crate::bindings::wasi::http::types::IncomingRequest, out: $crate::bindings::wasi::http::types::ResponseOutparam) {
                use $crate::http::SendReply;
                let $request = &request;
                $answer.send(out);
            }
        }

        impl $crate::bindings::exports::votes::platform::handler::Guest for $component {
            fn handle(request: $crate::bindings::exports::votes::platform::handler::Request) -> $crate::bindings::exports::votes::platform::handler::Response {
                let $request = &request;
                $answer.into()
            }
        }

        $crate::bindings::export_producer!($component);
    };
}
