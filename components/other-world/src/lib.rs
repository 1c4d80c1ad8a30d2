//! A component that is not a producer: it exports `greet` instead of an HTTP handler.

wit_bindgen::generate!({
    inline: "package test:other; world other { export greet: func() -> string; }",
});

struct Other;

impl Guest for Other {
    fn greet() -> String {
        "not a producer".into()
    }
}

export!(Other);
