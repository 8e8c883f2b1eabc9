//! Scope vocabulary and scope checks.
//!
//! Scope names are resolved to bit positions once, when the vocabulary is loaded, and `implies`
//! is closed transitively then, so a per-request check is a few word ANDs: it never walks the
//! implies graph, never compares strings and never allocates unless it fails.

use std::collections::HashMap;

/// Most scopes one vocabulary may define. Bounding it keeps [`ScopeSet`] an inline array, so
/// expanding a token's scopes costs no allocation.
pub const MAX_SCOPES: usize = 256;
const WORDS: usize = MAX_SCOPES / 64;

/// Index of a scope in its [`Vocabulary`]. Only a vocabulary hands these out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeId(u16);

impl ScopeId {
    /// Position of the scope in file order.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A fixed-size bitset of scopes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet {
    bits: [u64; WORDS],
}

impl ScopeSet {
    pub fn contains(&self, id: ScopeId) -> bool {
        let i = id.index();
        self.bits
            .get(i / 64)
            .is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }

    /// True when every scope of `other` is in `self`.
    pub fn is_superset(&self, other: &ScopeSet) -> bool {
        self.bits.iter().zip(&other.bits).all(|(a, b)| b & !a == 0)
    }

    pub fn intersects(&self, other: &ScopeSet) -> bool {
        self.bits.iter().zip(&other.bits).any(|(a, b)| a & b != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Scopes in either set.
    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// Scopes in both sets.
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        let mut out = self.clone();
        for (a, b) in out.bits.iter_mut().zip(&other.bits) {
            *a &= b;
        }
        out
    }

    /// Scopes in ascending id (file) order.
    pub fn iter(&self) -> impl Iterator<Item = ScopeId> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                // w < WORDS and bit < 64, so this is < MAX_SCOPES and fits in u16.
                Some(ScopeId((w * 64 + bit) as u16))
            })
        })
    }

    fn insert(&mut self, id: ScopeId) {
        let i = id.index();
        if let Some(w) = self.bits.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    fn union_with(&mut self, other: &ScopeSet) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }

    fn difference(&self, other: &ScopeSet) -> ScopeSet {
        let mut out = self.clone();
        for (a, b) in out.bits.iter_mut().zip(&other.bits) {
            *a &= !b;
        }
        out
    }
}

/// Why a scope vocabulary was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VocabularyError {
    #[error("scope `{scope}` implies `{implied}`, which is not a defined scope")]
    UnknownImplied { scope: String, implied: String },
    #[error("{count} scopes defined; at most {MAX_SCOPES} are supported")]
    TooMany { count: usize },
    #[error("scope `{scope}` is defined twice")]
    Duplicate { scope: String },
    #[error("scope name {scope:?} is invalid: {reason}")]
    InvalidName { scope: String, reason: &'static str },
}

/// The configured scope vocabulary: names, descriptions and the closed `implies` relation.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    names: Vec<String>,
    descriptions: Vec<String>,
    index: HashMap<String, ScopeId>,
    /// `closure[i]`: scope `i` and everything it implies, directly or not.
    closure: Vec<ScopeSet>,
}

/// RFC 6749 scope-token characters. Names end up inside `WWW-Authenticate: ... scope="..."`,
/// so a space, quote, backslash or control byte would break (or inject into) that header.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name == "*" {
        return Err("`*` is reserved to mean every scope in `implies`");
    }
    let ok = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
    if name.bytes().all(ok) {
        Ok(())
    } else {
        Err("only printable ASCII other than space, `\"` and `\\` is allowed")
    }
}

impl Vocabulary {
    /// `defs`: (name, description, implies) in file order; `"*"` in implies means every scope.
    /// The transitive closure is built here (cycles are fine), so checks are a bitset AND.
    pub fn new(defs: Vec<(String, String, Vec<String>)>) -> Result<Self, VocabularyError> {
        if defs.len() > MAX_SCOPES {
            return Err(VocabularyError::TooMany { count: defs.len() });
        }
        let mut v = Vocabulary::default();
        let mut every = ScopeSet::default();
        for (i, (name, description, _)) in defs.iter().enumerate() {
            check_name(name).map_err(|reason| VocabularyError::InvalidName {
                scope: name.clone(),
                reason,
            })?;
            // i < MAX_SCOPES, checked above.
            let id = ScopeId(i as u16);
            if v.index.insert(name.clone(), id).is_some() {
                return Err(VocabularyError::Duplicate {
                    scope: name.clone(),
                });
            }
            v.names.push(name.clone());
            v.descriptions.push(description.clone());
            every.insert(id);
        }
        for (i, (name, _, implies)) in defs.iter().enumerate() {
            let mut set = ScopeSet::default();
            set.insert(ScopeId(i as u16));
            for implied in implies {
                if implied == "*" {
                    set.union_with(&every);
                } else if let Some(&id) = v.index.get(implied.as_str()) {
                    set.insert(id);
                } else {
                    return Err(VocabularyError::UnknownImplied {
                        scope: name.clone(),
                        implied: implied.clone(),
                    });
                }
            }
            v.closure.push(set);
        }
        // Warshall's algorithm on bit rows: after step k, row i holds every scope reachable
        // from i through intermediates < k. At most MAX_SCOPES² row tests, once per load.
        for k in 0..v.closure.len() {
            let row_k = v.closure[k].clone();
            let id_k = ScopeId(k as u16);
            for row in v.closure.iter_mut() {
                if row.contains(id_k) {
                    row.union_with(&row_k);
                }
            }
        }
        Ok(v)
    }

    pub fn id(&self, name: &str) -> Option<ScopeId> {
        self.index.get(name).copied()
    }

    /// Name of `id`; empty for an id from another (e.g. pre-reload) vocabulary rather than a panic.
    pub fn name(&self, id: ScopeId) -> &str {
        self.names.get(id.index()).map_or("", String::as_str)
    }

    /// Names in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn description(&self, id: ScopeId) -> &str {
        self.descriptions.get(id.index()).map_or("", String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Expand granted scope names (from a token or a user record) through implies. Names not in
    /// the vocabulary, including a literal `*`, are ignored: never an error, never a match.
    pub fn expand<'a>(&self, granted: impl IntoIterator<Item = &'a str>) -> ScopeSet {
        let mut out = ScopeSet::default();
        for name in granted {
            if let Some(set) = self.id(name).and_then(|id| self.closure.get(id.index())) {
                out.union_with(set);
            }
        }
        out
    }

    /// The set of exactly `ids`, without expansion (what a route requires).
    pub fn set_of(&self, ids: &[ScopeId]) -> ScopeSet {
        let mut out = ScopeSet::default();
        for &id in ids {
            out.insert(id);
        }
        out
    }

    fn join_names(&self, set: &ScopeSet) -> String {
        let mut out = String::new();
        for id in set.iter() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(self.name(id));
        }
        out
    }
}

/// What a route requires of a signed-in caller.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Requirement {
    /// Every one of these.
    pub all: ScopeSet,
    /// At least one of these; empty means no such condition.
    pub any: ScopeSet,
}

impl Requirement {
    /// Ok when `granted` (already expanded) has every scope of `all` and, if `any` is non-empty,
    /// at least one of `any`. Err carries the space-separated names for
    /// `WWW-Authenticate: ... scope="..."`: the missing `all` scopes, or, when only the `any`
    /// condition fails, the `any` scopes.
    pub fn check(&self, granted: &ScopeSet, vocab: &Vocabulary) -> Result<(), String> {
        let missing = self.all.difference(granted);
        if !missing.is_empty() {
            return Err(vocab.join_names(&missing));
        }
        if !self.any.is_empty() && !self.any.intersects(granted) {
            return Err(vocab.join_names(&self.any));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn def(name: &str, implies: &[&str]) -> (String, String, Vec<String>) {
        let implies = implies.iter().map(|s| s.to_string()).collect();
        (name.to_string(), format!("about {name}"), implies)
    }

    fn vocab() -> Vocabulary {
        Vocabulary::new(vec![
            def("read:items", &[]),
            def("write:items", &["read:items"]),
            def("admin", &["*"]),
            def("read", &[]),
            def("billing", &[]),
            def("reports", &[]),
        ])
        .unwrap()
    }

    fn req(v: &Vocabulary, all: &[&str], any: &[&str]) -> Requirement {
        let ids = |n: &[&str]| n.iter().map(|s| v.id(s).unwrap()).collect::<Vec<_>>();
        Requirement {
            all: v.set_of(&ids(all)),
            any: v.set_of(&ids(any)),
        }
    }

    #[test]
    fn lookups() {
        let v = vocab();
        let id = v.id("write:items").unwrap();
        assert_eq!(v.name(id), "write:items");
        assert_eq!(v.description(id), "about write:items");
        assert_eq!(
            v.names().collect::<Vec<_>>()[..2],
            ["read:items", "write:items"]
        );
        assert_eq!(v.id("READ:items"), None);
        assert_eq!(v.id("readadmin"), None);
    }

    #[test]
    fn implies_and_star() {
        let v = vocab();
        let w = v.expand(["write:items"]);
        assert!(w.contains(v.id("read:items").unwrap()));
        assert!(!w.contains(v.id("admin").unwrap()));
        let a = v.expand(["admin"]);
        assert_eq!(a.len(), v.len());
        // Unknown names, a literal `*`, wrong case and concatenations grant nothing.
        assert!(v
            .expand(["*", "READ", "readadmin", "read:items "])
            .is_empty());
    }

    #[test]
    fn transitive_and_cyclic() {
        let v = Vocabulary::new(vec![
            def("a", &["b"]),
            def("b", &["c"]),
            def("c", &["a"]),
            def("d", &["c"]),
        ])
        .unwrap();
        let abc = v.expand(["a"]);
        assert_eq!(abc, v.expand(["c"]));
        assert_eq!(abc.len(), 3);
        assert_eq!(v.expand(["d"]).len(), 4);
    }

    #[test]
    fn check_all_and_any() {
        let v = vocab();
        let r = req(&v, &["read:items", "billing"], &[]);
        assert_eq!(
            r.check(&v.expand(["read"]), &v),
            Err("read:items billing".into())
        );
        assert_eq!(
            r.check(&v.expand(["write:items"]), &v),
            Err("billing".into())
        );
        assert_eq!(r.check(&v.expand(["write:items", "billing"]), &v), Ok(()));
        assert_eq!(r.check(&v.expand(["admin"]), &v), Ok(()));

        let r = req(&v, &["read"], &["billing", "reports"]);
        assert_eq!(r.check(&v.expand(["billing"]), &v), Err("read".into()));
        assert_eq!(
            r.check(&v.expand(["read"]), &v),
            Err("billing reports".into())
        );
        assert_eq!(r.check(&v.expand(["read", "reports"]), &v), Ok(()));
        // Signed in with no scope condition at all.
        assert_eq!(
            Requirement::default().check(&ScopeSet::default(), &v),
            Ok(())
        );
    }

    #[test]
    fn set_ops() {
        let v = vocab();
        let w = v.expand(["write:items"]);
        let r = v.expand(["read:items"]);
        assert!(w.is_superset(&r) && !r.is_superset(&w));
        assert!(w.intersects(&r) && !w.intersects(&v.expand(["billing"])));
        assert_eq!(w.union(&r), w);
        let ids: Vec<_> = v.expand(["admin"]).iter().map(ScopeId::index).collect();
        assert_eq!(ids, (0..v.len()).collect::<Vec<_>>());
    }

    #[test]
    fn refused_vocabularies() {
        let e = Vocabulary::new(vec![def("a", &["nope"])]).unwrap_err();
        assert!(matches!(e, VocabularyError::UnknownImplied { .. }));
        assert!(e.to_string().contains("`nope`"));
        let e = Vocabulary::new(vec![def("a", &[]), def("a", &[])]).unwrap_err();
        assert!(matches!(e, VocabularyError::Duplicate { .. }));
        for bad in ["", "*", "a b", "a\"b", "a\\b", "é", "a\n"] {
            let e = Vocabulary::new(vec![def(bad, &[])]).unwrap_err();
            assert!(matches!(e, VocabularyError::InvalidName { .. }), "{bad:?}");
        }
        let many = (0..=MAX_SCOPES)
            .map(|i| def(&format!("s{i}"), &[]))
            .collect();
        assert!(matches!(
            Vocabulary::new(many),
            Err(VocabularyError::TooMany { .. })
        ));
        let max: Vec<_> = (0..MAX_SCOPES)
            .map(|i| def(&format!("s{i}"), &["*"]))
            .collect();
        let v = Vocabulary::new(max).unwrap();
        assert_eq!(v.expand(["s255"]).len(), MAX_SCOPES);
    }
}
