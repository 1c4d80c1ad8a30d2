//! A hostile test component: it exports an interface named `votes:platform/handler@0.1.0` whose
//! `handle` takes and returns a string, not the contract's request and response.

wit_bindgen::generate!({
    inline: "package votes:platform@0.1.0; interface handler { handle: func(request: string) -> string; } world wrong-handler { export handler; }",
});

struct WrongHandler;

impl exports::votes::platform::handler::Guest for WrongHandler {
    fn handle(request: String) -> String {
        request
    }
}

export!(WrongHandler);
