//! Results: a minimal JSON value for the final stdout line, and a tally of failures by reason.

use std::{collections::BTreeMap, fmt, sync::Mutex};
use wsgate::lock;

/// A JSON value; objects keep their insertion order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Json {
    /// Not measured (e.g. no `--pid`).
    Null,
    /// A count.
    U(u64),
    /// A measurement; written with up to 3 decimals, non-finite as `null`.
    F(f64),
    /// A flag.
    Bool(bool),
    /// Text.
    S(String),
    /// A list.
    Arr(Vec<Json>),
    /// Named fields, in order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An empty object.
    pub(crate) fn obj() -> Self {
        Json::Obj(Vec::new())
    }

    /// Adds `key: value` to an object (ignored on other values).
    pub(crate) fn with(mut self, key: &str, value: impl Into<Json>) -> Self {
        self.push(key, value);
        self
    }

    /// Adds the server's RSS and fd count before and after the run (null without `--pid`).
    pub(crate) fn with_samples(
        self,
        before: Option<crate::procstat::Sample>,
        after: Option<crate::procstat::Sample>,
    ) -> Self {
        self.with("rss_kb_before", before.map(|s| s.rss_kb))
            .with("rss_kb_after", after.map(|s| s.rss_kb))
            .with("fds_before", before.map(|s| s.fds))
            .with("fds_after", after.map(|s| s.fds))
    }

    /// Adds `key: value` to an object in place.
    pub(crate) fn push(&mut self, key: &str, value: impl Into<Json>) {
        if let Json::Obj(fields) = self {
            fields.push((key.to_owned(), value.into()));
        }
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Self {
        v.map_or(Json::Null, Into::into)
    }
}
impl From<u64> for Json {
    fn from(v: u64) -> Self {
        Json::U(v)
    }
}
impl From<f64> for Json {
    fn from(v: f64) -> Self {
        Json::F(v)
    }
}
impl From<bool> for Json {
    fn from(v: bool) -> Self {
        Json::Bool(v)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Self {
        Json::S(v.to_owned())
    }
}
impl From<Vec<Json>> for Json {
    fn from(v: Vec<Json>) -> Self {
        Json::Arr(v)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::U(v) => write!(f, "{v}"),
            Json::F(v) if !v.is_finite() => f.write_str("null"),
            Json::F(v) => {
                let s = format!("{v:.3}");
                let s = s.trim_end_matches('0').trim_end_matches('.');
                f.write_str(if s == "-0" { "0" } else { s })
            }
            Json::Bool(v) => write!(f, "{v}"),
            Json::S(s) => {
                let mut out = String::new();
                crate::socketio::push_json_string(&mut out, s);
                f.write_str(&out)
            }
            Json::Arr(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Json::Obj(fields) => {
                f.write_str("{")?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{v}", Json::S(k.clone()))?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Failures counted by a short reason (`connect: connection refused`, `http 404`, `timeout` ...).
#[derive(Debug, Default)]
pub(crate) struct Reasons(Mutex<BTreeMap<String, u64>>);

impl Reasons {
    /// Counts one failure.
    pub(crate) fn add(&self, reason: impl Into<String>) {
        *lock::mutex(&self.0).entry(reason.into()).or_default() += 1;
    }

    /// All failures.
    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        lock::mutex(&self.0).values().sum()
    }

    /// `{"reason": count, ...}`.
    pub(crate) fn to_json(&self) -> Json {
        Json::Obj(
            lock::mutex(&self.0)
                .iter()
                .map(|(k, v)| (k.clone(), Json::U(*v)))
                .collect(),
        )
    }

    /// `reason=count, ...` for the human summary, or `none`.
    pub(crate) fn summary(&self) -> String {
        let map = lock::mutex(&self.0);
        if map.is_empty() {
            return "none".into();
        }
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_compact_json() {
        let j = Json::obj()
            .with("n", 3u64)
            .with("x", 1.5f64)
            .with("r", 2.0f64 / 3.0)
            .with("z", 0.0f64)
            .with("nan", f64::NAN)
            .with("ok", true)
            .with("none", None::<u64>)
            .with("s", "a\"b")
            .with("a", vec![Json::U(1), Json::obj().with("k", 2u64)]);
        assert_eq!(
            j.to_string(),
            r#"{"n":3,"x":1.5,"r":0.667,"z":0,"nan":null,"ok":true,"none":null,"s":"a\"b","a":[1,{"k":2}]}"#
        );
    }

    #[test]
    fn tallies_reasons() {
        let r = Reasons::default();
        assert_eq!(r.summary(), "none");
        r.add("timeout");
        r.add("http 404");
        r.add("timeout");
        assert_eq!(r.total(), 3);
        assert_eq!(r.to_json().to_string(), r#"{"http 404":1,"timeout":2}"#);
        assert_eq!(r.summary(), "http 404=1, timeout=2");
    }
}
