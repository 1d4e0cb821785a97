//! Where a policy applies: a reality glob and a topic pattern.

use crate::routing::Pattern;

/// Longest reality glob, in bytes.
const MAX_GLOB_BYTES: usize = 128;

/// A reality glob, as in `[[retention]]`: `*` stands for any run of characters (including
/// none), `?` for any one character; everything else is literal. `*` alone matches every
/// reality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealityGlob {
    text: Box<str>,
}

impl RealityGlob {
    pub fn parse(glob: &str) -> Result<Self, String> {
        if glob.is_empty() || glob.len() > MAX_GLOB_BYTES {
            return Err(format!(
                "reality glob `{glob}` must be 1 to {MAX_GLOB_BYTES} bytes"
            ));
        }
        if let Some(ch) = glob.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '~' | '*' | '?'))
        }) {
            return Err(format!(
                "reality glob `{glob}` has {ch:?}; globs use [A-Za-z0-9_.~-], `*` and `?`"
            ));
        }
        Ok(Self { text: glob.into() })
    }

    /// Glob matching with one backtrack point (the last `*`): linear in practice, no allocation.
    pub fn matches(&self, reality: &str) -> bool {
        let (p, s) = (self.text.as_bytes(), reality.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if pi < p.len() && (p[pi] == s[si] || p[pi] == b'?') {
                pi += 1;
                si += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does this glob name every reality (no literal character at all)?
    pub fn is_global(&self) -> bool {
        self.text.bytes().all(|b| b == b'*' || b == b'?') && self.text.contains('*')
    }
}

/// Does every reality `inner` matches also match `outer`? Both are globs (`*`, `?`). Sound, and
/// exact for the globs grants and bindings use: `outer`'s `*` may stand for any run of `inner`'s
/// characters and wildcards, its `?` for one literal or `?` of `inner` (not a `*`, which can be
/// many), and literals must be equal. Dynamic programming over the two texts, at most 128 bytes
/// each: no recursion, no backtracking blow-up.
pub fn glob_covers(outer: &str, inner: &str) -> bool {
    let (o, i) = (outer.as_bytes(), inner.as_bytes());
    // row[j]: does outer[..oi] cover inner[..j]?
    let mut row = vec![false; i.len() + 1];
    row[0] = true;
    for &oc in o {
        let mut next = vec![false; i.len() + 1];
        if oc == b'*' {
            // `*` covers any prefix extension of what the rest covered.
            let mut seen = false;
            for j in 0..=i.len() {
                seen |= row[j];
                next[j] = seen;
            }
        } else {
            for j in 1..=i.len() {
                let ic = i[j - 1];
                let one = if oc == b'?' { ic != b'*' } else { ic == oc };
                next[j] = row[j - 1] && one;
            }
        }
        row = next;
    }
    row[i.len()]
}

/// One binding of a policy.
#[derive(Debug, Clone)]
pub struct Binding {
    pub reality: RealityGlob,
    pub topic: Pattern,
    topic_text: Box<str>,
}

impl Binding {
    pub fn parse(reality_glob: &str, topic_pattern: &str) -> Result<Self, String> {
        let reality = RealityGlob::parse(reality_glob)?;
        let topic = Pattern::parse(topic_pattern)
            .map_err(|e| format!("topic pattern `{topic_pattern}` is invalid: {e}"))?;
        Ok(Self {
            reality,
            topic,
            topic_text: topic_pattern.into(),
        })
    }

    pub fn matches(&self, reality: &str, topic: &str) -> bool {
        self.topic.matches(topic) && self.reality.matches(reality)
    }

    pub fn topic_pattern(&self) -> &str {
        &self.topic_text
    }
}

/// Bindings as JSON, for audit records and listings (policies and operators).
pub fn bindings_json(bindings: &[Binding]) -> serde_json::Value {
    bindings
        .iter()
        .map(|b| {
            serde_json::json!({
                "reality_glob": b.reality.as_str(),
                "topic_pattern": b.topic_pattern(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_containment_is_sound() {
        let yes = [
            ("*", "lab-*"),
            ("*", "*"),
            ("lab-*", "lab-*"),
            ("lab-*", "lab-1"),
            ("lab-*", "lab-1*"),
            ("lab-*", "lab-?x*"),
            ("l?b-*", "lab-*"),
            ("*-1", "lab-1"),
            ("a*b*c", "a-b-c"),
        ];
        let no = [
            ("lab-*", "*"),
            ("lab-*", "la*"),
            ("lab-1", "lab-*"),
            ("lab-?", "lab-*"),
            ("lab-?", "lab-"),
            ("a?c", "a*c"),
            ("lab-*", "other-1"),
        ];
        for (outer, inner) in yes {
            assert!(glob_covers(outer, inner), "{outer} covers {inner}");
        }
        for (outer, inner) in no {
            assert!(!glob_covers(outer, inner), "{outer} does not cover {inner}");
        }
        // Whatever the check says, it never claims a reality the outer glob does not match.
        let samples = ["lab-1", "lab-", "lab-12", "la", "other-1", "a-b-c", "x"];
        for (outer, inner) in yes {
            let (o, i) = (
                RealityGlob::parse(outer).unwrap(),
                RealityGlob::parse(inner).unwrap(),
            );
            for s in samples {
                assert!(
                    !i.matches(s) || o.matches(s),
                    "{outer} ⊇ {inner} but not for {s}"
                );
            }
        }
        assert!(RealityGlob::parse("*").unwrap().is_global());
        assert!(RealityGlob::parse("?*").unwrap().is_global());
        assert!(!RealityGlob::parse("lab-*").unwrap().is_global());
    }
    use proptest::prelude::*;

    fn glob(g: &str) -> RealityGlob {
        RealityGlob::parse(g).unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob("*").matches("anything"));
        assert!(glob("lab-1").matches("lab-1"));
        assert!(!glob("lab-1").matches("lab-12"));
        assert!(glob("lab-*").matches("lab-"));
        assert!(glob("lab-*").matches("lab-42"));
        assert!(!glob("lab-*").matches("xlab-42"));
        assert!(glob("*-prod").matches("eu-prod"));
        assert!(glob("a*b*c").matches("axxbyyc"));
        assert!(!glob("a*b*c").matches("axxbyy"));
        assert!(glob("a**").matches("a"));
        assert!(glob("lab-?").matches("lab-1"));
        assert!(!glob("lab-?").matches("lab-12"));
        assert!(!glob("lab-?").matches("lab-"));
        for bad in ["", "a b", "a/b", "é"] {
            assert!(RealityGlob::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binding_needs_both() {
        let b = Binding::parse("lab-*", "nvm.job.submit").unwrap();
        assert!(b.matches("lab-1", "nvm.job.submit"));
        assert!(!b.matches("lab-1", "nvm.job.cancel"));
        assert!(!b.matches("prod", "nvm.job.submit"));
        assert!(Binding::parse("*", "nvm.>.x").is_err());
    }

    /// A simple recursive matcher to check the iterative one against.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => reference(&p[1..], s) || (!s.is_empty() && reference(p, &s[1..])),
            (Some(a), Some(b)) if a == b || *a == b'?' => reference(&p[1..], &s[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_reference(p in "[ab*?]{1,8}", s in "[ab]{0,10}") {
            prop_assert_eq!(glob(&p).matches(&s), reference(p.as_bytes(), s.as_bytes()));
        }
    }
}
