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
