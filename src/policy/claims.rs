//! Conditions on a token's claims (a route's `claims:`): `equals`, `any_of`, `contains` and
//! `exists` on dotted paths, all of which must hold. Evaluated after the route's scopes, on
//! the claims the verified token carries.
//!
//! Pure: the claims are a parameter. Comparisons are typed: the string `"42"` is not the
//! number `42`; numbers compare by value (`42` equals `42.0`); a missing claim satisfies
//! nothing but `exists: false`.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::policy::claim_path::ClaimPath;

/// A value a condition compares with: a string, a number or a boolean.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    String(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl Scalar {
    /// A scalar from a JSON (or YAML) value; `None` for arrays, objects and null.
    pub fn from_value(value: &Value) -> Option<Scalar> {
        match value {
            Value::String(s) => Some(Scalar::String(s.clone())),
            Value::Number(n) => Some(Scalar::Number(n.clone())),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            _ => None,
        }
    }

    /// Whether the claim value `value` is this scalar, same type and value.
    pub fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Scalar::String(a), Value::String(b)) => a == b,
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            (Scalar::Number(a), Value::Number(b)) => numbers_equal(a, b),
            _ => false,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // JSON spelling: quoted and escaped, so the text is unambiguous.
            Scalar::String(s) => write!(f, "{}", Value::String(s.clone())),
            Scalar::Number(n) => write!(f, "{n}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Integers compare exactly; anything else as floating point.
fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// What a condition requires of the value at its path.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimTest {
    /// The value is this scalar.
    Equals(Scalar),
    /// The value is one of these scalars.
    AnyOf(Vec<Scalar>),
    /// The value is an array with this scalar among its members.
    Contains(Scalar),
    /// `true`: the claim is present (and not null); `false`: it is absent (or null).
    Exists(bool),
}

/// One condition: a path and a test, with its description rendered once at config build.
#[derive(Debug, Clone)]
pub struct ClaimCondition {
    pub path: ClaimPath,
    pub test: ClaimTest,
    /// `realm_access.roles contains "billing"`: config text only, never a token's value.
    pub description: Arc<str>,
}

impl ClaimCondition {
    pub fn new(path: ClaimPath, test: ClaimTest) -> ClaimCondition {
        let description = describe(&path, &test).into();
        ClaimCondition {
            path,
            test,
            description,
        }
    }

    /// Whether `claims` (a token's claim set) satisfies this condition.
    pub fn holds(&self, claims: &Value) -> bool {
        let value = self.path.lookup(claims).filter(|v| !v.is_null());
        match (&self.test, value) {
            (ClaimTest::Exists(wanted), value) => value.is_some() == *wanted,
            (_, None) => false,
            (ClaimTest::Equals(scalar), Some(value)) => scalar.matches(value),
            (ClaimTest::AnyOf(list), Some(value)) => list.iter().any(|s| s.matches(value)),
            (ClaimTest::Contains(scalar), Some(Value::Array(items))) => {
                items.iter().any(|item| scalar.matches(item))
            }
            (ClaimTest::Contains(_), Some(_)) => false,
        }
    }
}

fn describe(path: &ClaimPath, test: &ClaimTest) -> String {
    match test {
        ClaimTest::Equals(s) => format!("{path} equals {s}"),
        ClaimTest::Contains(s) => format!("{path} contains {s}"),
        ClaimTest::AnyOf(list) => {
            let items: Vec<String> = list.iter().map(Scalar::to_string).collect();
            format!("{path} any_of [{}]", items.join(", "))
        }
        ClaimTest::Exists(true) => format!("{path} exists"),
        ClaimTest::Exists(false) => format!("{path} is absent"),
    }
}

/// A route's conditions (empty: none), all of which must hold.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    conditions: Vec<ClaimCondition>,
}

impl ClaimRules {
    pub fn new(conditions: Vec<ClaimCondition>) -> ClaimRules {
        ClaimRules { conditions }
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    pub fn conditions(&self) -> &[ClaimCondition] {
        &self.conditions
    }

    /// The first condition `claims` fails, in config order; `None` (no claims known) fails
    /// every condition but `exists: false`.
    pub fn first_failed(&self, claims: Option<&Value>) -> Option<&ClaimCondition> {
        let empty = Value::Null;
        let claims = claims.unwrap_or(&empty);
        self.conditions.iter().find(|c| !c.holds(claims))
    }
}

/// Only what `paths` reach in `claims`, in the same nesting: what an identity keeps for the
/// claim rules, so the token cache does not hold whole claim sets. `Null` when `paths` is
/// empty or reaches nothing.
pub fn keep(claims: &Value, paths: &[ClaimPath]) -> Value {
    let mut kept = Value::Null;
    for path in paths {
        let Some(value) = path.lookup(claims) else {
            continue;
        };
        let mut at = &mut kept;
        for segment in path.as_str().split('.') {
            if !at.is_object() {
                *at = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(map) = at {
                at = map.entry(segment.to_owned()).or_insert(Value::Null);
            }
        }
        *at = value.clone();
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn condition(path: &str, test: ClaimTest) -> ClaimCondition {
        ClaimCondition::new(ClaimPath::parse(path).expect("path"), test)
    }

    fn s(text: &str) -> Scalar {
        Scalar::String(text.to_owned())
    }

    fn n(value: serde_json::Value) -> Scalar {
        Scalar::from_value(&value).expect("scalar")
    }

    fn claims() -> Value {
        json!({
            "sub": "dana",
            "org": { "id": 42, "name": "Acme", "ratio": 0.5 },
            "realm_access": { "roles": ["billing", "reader", 7, true] },
            "email_verified": true,
            "tier": "gold",
            "department": "",
            "nothing": null,
            "big": 18446744073709551615u64,
            "neg": -3,
        })
    }

    #[test]
    fn conditions_over_nested_and_array_claims() {
        use ClaimTest::*;
        let table: Vec<(&str, ClaimTest, bool)> = vec![
            // strings
            ("tier", Equals(s("gold")), true),
            ("tier", Equals(s("Gold")), false),
            ("org.name", Equals(s("Acme")), true),
            ("tier", AnyOf(vec![s("platinum"), s("gold")]), true),
            ("tier", AnyOf(vec![s("silver")]), false),
            // numbers, exactly and by value, never as strings
            ("org.id", Equals(n(json!(42))), true),
            ("org.id", Equals(n(json!(42.0))), true),
            ("org.id", Equals(n(json!(43))), false),
            ("org.id", Equals(s("42")), false),
            ("org.ratio", Equals(n(json!(0.5))), true),
            ("big", Equals(n(json!(18446744073709551615u64))), true),
            ("big", Equals(n(json!(-1))), false),
            ("neg", Equals(n(json!(-3))), true),
            ("org.id", AnyOf(vec![n(json!(1)), n(json!(42))]), true),
            // booleans, never truthiness
            ("email_verified", Equals(Scalar::Bool(true)), true),
            ("email_verified", Equals(s("true")), false),
            ("email_verified", Equals(Scalar::Bool(false)), false),
            ("department", Equals(Scalar::Bool(false)), false),
            // arrays
            ("realm_access.roles", Contains(s("billing")), true),
            ("realm_access.roles", Contains(s("bill")), false),
            ("realm_access.roles", Contains(n(json!(7))), true),
            ("realm_access.roles", Contains(Scalar::Bool(true)), true),
            ("realm_access.roles", Equals(s("billing")), false),
            // `contains` on a string is not a substring test
            ("tier", Contains(s("gol")), false),
            ("tier", Contains(s("gold")), false),
            // missing claims satisfy nothing, at any depth
            ("missing", Equals(s("x")), false),
            ("org.missing", Equals(n(json!(42))), false),
            ("tier.deeper", Equals(s("gold")), false),
            ("missing", AnyOf(vec![s("x")]), false),
            ("missing", Contains(s("x")), false),
            // existence; null counts as absent; an empty string is present
            ("department", Exists(true), true),
            ("org", Exists(true), true),
            ("missing", Exists(true), false),
            ("nothing", Exists(true), false),
            ("missing", Exists(false), true),
            ("nothing", Exists(false), true),
            ("tier", Exists(false), false),
            // wrong types
            ("org", Equals(s("Acme")), false),
            ("realm_access", Contains(s("roles")), false),
        ];
        let claims = claims();
        for (path, test, expected) in table {
            let c = condition(path, test);
            assert_eq!(c.holds(&claims), expected, "{}", c.description);
        }
    }

    #[test]
    fn all_conditions_must_hold_and_the_first_failing_one_is_named() {
        let rules = ClaimRules::new(vec![
            condition("org.id", ClaimTest::Equals(n(json!(42)))),
            condition("realm_access.roles", ClaimTest::Contains(s("admin"))),
            condition("tier", ClaimTest::Equals(s("gold"))),
        ]);
        let failed = rules.first_failed(Some(&claims())).expect("fails");
        assert_eq!(
            &*failed.description,
            r#"realm_access.roles contains "admin""#
        );
        assert!(ClaimRules::default().first_failed(None).is_none());
        // No claims known: only `exists: false` can hold.
        let absent = ClaimRules::new(vec![condition("x", ClaimTest::Exists(false))]);
        assert!(absent.first_failed(None).is_none());
        let present = ClaimRules::new(vec![condition("x", ClaimTest::Exists(true))]);
        assert!(present.first_failed(None).is_some());
    }

    #[test]
    fn descriptions_name_the_condition_in_config_terms() {
        let cases = [
            (
                condition("org.id", ClaimTest::Equals(n(json!(42)))),
                "org.id equals 42",
            ),
            (
                condition("tier", ClaimTest::AnyOf(vec![s("gold"), s("platinum")])),
                r#"tier any_of ["gold", "platinum"]"#,
            ),
            (condition("a", ClaimTest::Exists(true)), "a exists"),
            (condition("a", ClaimTest::Exists(false)), "a is absent"),
            (
                condition("q", ClaimTest::Equals(s("say \"hi\""))),
                r#"q equals "say \"hi\"""#,
            ),
        ];
        for (c, text) in cases {
            assert_eq!(&*c.description, text);
        }
    }

    #[test]
    fn keep_retains_only_what_the_paths_reach() {
        let path = |p: &str| ClaimPath::parse(p).expect("path");
        let kept = keep(
            &claims(),
            &[path("org.id"), path("realm_access.roles"), path("absent.x")],
        );
        assert_eq!(
            kept,
            json!({"org": {"id": 42}, "realm_access": {"roles": ["billing", "reader", 7, true]}})
        );
        // A path and its parent: the parent's whole value is kept.
        let kept = keep(&claims(), &[path("org.id"), path("org")]);
        assert_eq!(
            kept,
            json!({"org": {"id": 42, "name": "Acme", "ratio": 0.5}})
        );
        let kept = keep(&claims(), &[path("org"), path("org.id")]);
        assert_eq!(
            kept,
            json!({"org": {"id": 42, "name": "Acme", "ratio": 0.5}})
        );
        assert_eq!(keep(&claims(), &[]), Value::Null);
        // Conditions give the same answers on what was kept.
        let rules = ClaimRules::new(vec![
            condition("org.id", ClaimTest::Equals(n(json!(42)))),
            condition("tier", ClaimTest::Exists(false)),
        ]);
        let kept = keep(&claims(), &[path("org.id"), path("tier")]);
        assert_eq!(
            rules.first_failed(Some(&kept)).map(|c| &*c.description),
            Some("tier is absent")
        );
    }
}
