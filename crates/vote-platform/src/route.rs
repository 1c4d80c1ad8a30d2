//! HTTP routes as Spin writes them: `/tweets` (that path exactly), `/tweets/...` (that path and
//! everything under it) and `/...` (every path). The most specific route wins: an exact route
//! before a wildcard, a longer wildcard before a shorter one.

/// The most routes one application may have.
pub const MAX_ROUTES: usize = 64;
/// The longest route pattern.
pub const MAX_ROUTE_BYTES: usize = 128;

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// This path only.
    Exact(String),
    /// This prefix (without its trailing `/`; empty for `/...`) and every path under it.
    Wildcard(String),
}

/// Why a route pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {route:?}: {reason}")]
pub struct RouteError {
    pub route: String,
    pub reason: String,
}

impl Pattern {
    /// Parses a Spin route; parameters (`/:name`) and wildcards inside a path are refused.
    pub fn parse(route: &str) -> Result<Self, RouteError> {
        let refuse = |reason: &str| Err(RouteError { route: route.chars().take(MAX_ROUTE_BYTES).collect(), reason: reason.to_owned() });
        if route.len() > MAX_ROUTE_BYTES {
            return refuse(&format!("longer than {MAX_ROUTE_BYTES} bytes"));
        }
        if !route.starts_with('/') {
            return refuse("must start with '/'");
        }
        if !route.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b)) {
            return refuse("may hold only ASCII letters, digits and / - _ . ~ (no parameters)");
        }
        let (prefix, wildcard) = match route.strip_suffix("/...") {
            Some(prefix) => (prefix, true),
            None => (route.trim_end_matches('/'), false),
        };
        if prefix.contains("...") || prefix.contains("//") {
            return refuse("'...' may only end a route, and segments may not be empty");
        }
        if wildcard {
            Ok(Pattern::Wildcard(prefix.to_owned()))
        } else if prefix.is_empty() {
            Ok(Pattern::Exact("/".to_owned()))
        } else {
            Ok(Pattern::Exact(prefix.to_owned()))
        }
    }

    /// How specific the pattern is when it matches (higher wins).
    fn rank(&self) -> (usize, bool) {
        match self {
            Pattern::Exact(path) => (path.len(), true),
            Pattern::Wildcard(prefix) => (prefix.len(), false),
        }
    }

    /// Whether `path` (without its query) is served by this pattern.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Exact(exact) => path == exact || path.strip_suffix('/') == Some(exact),
            Pattern::Wildcard(prefix) => path == prefix || path.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('/')),
        }
    }
}

/// A route table: patterns to targets.
#[derive(Debug, Clone)]
pub struct Routes<T> {
    routes: Vec<(Pattern, T)>,
}

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<T> Routes<T> {
    /// A table from `(pattern, target)` pairs, most specific first; a pattern given twice is refused.
    pub fn new(mut routes: Vec<(Pattern, T)>) -> Result<Self, RouteError> {
        if routes.len() > MAX_ROUTES {
            return Err(RouteError { route: String::new(), reason: format!("an application has at most {MAX_ROUTES} routes") });
        }
        routes.sort_by(|a, b| b.0.rank().cmp(&a.0.rank()));
        for pair in routes.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(RouteError { route: format!("{:?}", pair[0].0), reason: "is given twice".into() });
            }
        }
        Ok(Self { routes })
    }

    /// The target of the most specific pattern matching `path`.
    pub fn find(&self, path: &str) -> Option<&T> {
        self.routes.iter().find(|(pattern, _)| pattern.matches(path)).map(|(_, target)| target)
    }

    /// Every pattern and its target, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = &(Pattern, T)> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Routes<&'static str> {
        let routes = [("/...", "votes"), ("/tweets/...", "weather"), ("/ballots", "ballots"), ("/ballots/batch", "batch")];
        Routes::new(routes.iter().map(|(r, t)| (Pattern::parse(r).unwrap(), *t)).collect()).unwrap()
    }

    #[test]
    fn the_most_specific_route_wins() {
        let routes = table();
        assert_eq!(routes.find("/votes"), Some(&"votes"));
        assert_eq!(routes.find("/tweets"), Some(&"weather"));
        assert_eq!(routes.find("/tweets/batch"), Some(&"weather"));
        assert_eq!(routes.find("/tweetsy"), Some(&"votes"));
        assert_eq!(routes.find("/ballots"), Some(&"ballots"));
        assert_eq!(routes.find("/ballots/"), Some(&"ballots"));
        assert_eq!(routes.find("/ballots/batch"), Some(&"batch"));
        assert_eq!(routes.find("/ballots/other"), Some(&"votes"));
    }

    #[test]
    fn without_a_catch_all_an_unrouted_path_has_no_target() {
        let routes = Routes::new(vec![(Pattern::parse("/tweets/...").unwrap(), 1)]).unwrap();
        assert_eq!(routes.find("/votes"), None);
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for bad in ["tweets", "/a/:id", "/a/.../b", "/a b", "//x", &format!("/{}", "a".repeat(200))] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        let twice = vec![(Pattern::parse("/a").unwrap(), 1), (Pattern::parse("/a/").unwrap(), 2)];
        assert!(Routes::new(twice).is_err());
    }
}
