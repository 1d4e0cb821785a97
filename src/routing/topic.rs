//! Topic and pattern syntax.
//!
//! A topic is `domain.subdomain.verb`: 2 to 8 segments of `[a-z0-9_-]+`, at most
//! [`MAX_TOPIC_BYTES`] in all. A pattern may use `*` for exactly one segment and, as its last
//! segment, `>` for one or more.

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_BYTES: usize = 255;
/// Longest reality id, in bytes.
pub const MAX_REALITY_BYTES: usize = 128;
const MIN_SEGMENTS: usize = 2;
const MAX_SEGMENTS: usize = 8;

/// Why a topic, pattern or reality id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty")]
    Empty,
    #[error("longer than {max} bytes")]
    TooLong { max: usize },
    #[error("has {found} segments; topics have {MIN_SEGMENTS} to {MAX_SEGMENTS}")]
    SegmentCount { found: usize },
    #[error("segment {index} is empty")]
    EmptySegment { index: usize },
    #[error("segment {index} has {ch:?}; segments use [a-z0-9_-]")]
    BadChar { index: usize, ch: char },
    #[error("`>` may only be the last segment")]
    RestNotLast,
    #[error("has {ch:?}; reality ids use [A-Za-z0-9_.~-]")]
    BadRealityChar { ch: char },
}

fn segment_byte_ok(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

fn check_segment(index: usize, seg: &str) -> Result<(), NameError> {
    if seg.is_empty() {
        return Err(NameError::EmptySegment { index });
    }
    match seg.bytes().find(|b| !segment_byte_ok(*b)) {
        None => Ok(()),
        Some(_) => {
            let ch = seg
                .chars()
                .find(|c| !c.is_ascii() || !segment_byte_ok(*c as u8))
                .unwrap_or('?');
            Err(NameError::BadChar { index, ch })
        }
    }
}

fn check_length(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_TOPIC_BYTES {
        return Err(NameError::TooLong {
            max: MAX_TOPIC_BYTES,
        });
    }
    Ok(())
}

fn check_segment_count(found: usize) -> Result<(), NameError> {
    if !(MIN_SEGMENTS..=MAX_SEGMENTS).contains(&found) {
        return Err(NameError::SegmentCount { found });
    }
    Ok(())
}

/// Checks a concrete topic (no wildcards).
pub fn validate_topic(topic: &str) -> Result<(), NameError> {
    check_length(topic)?;
    let mut count = 0;
    for (index, seg) in topic.split('.').enumerate() {
        check_segment(index, seg)?;
        count += 1;
    }
    check_segment_count(count)
}

/// Checks a reality id: 1 to 128 bytes of `[A-Za-z0-9_.~-]` (`~` names forks: `lab~k07`).
pub fn validate_reality(reality: &str) -> Result<(), NameError> {
    if reality.is_empty() {
        return Err(NameError::Empty);
    }
    if reality.len() > MAX_REALITY_BYTES {
        return Err(NameError::TooLong {
            max: MAX_REALITY_BYTES,
        });
    }
    match reality
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '~')))
    {
        None => Ok(()),
        Some(ch) => Err(NameError::BadRealityChar { ch }),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `*`: exactly one segment.
    One,
    /// `>`: one or more segments; always last.
    Rest,
}

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Box<[Segment]>,
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Self, NameError> {
        check_length(pattern)?;
        let parts: Vec<&str> = pattern.split('.').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let seg = match *part {
                "*" => Segment::One,
                ">" if index + 1 == parts.len() => Segment::Rest,
                ">" => return Err(NameError::RestNotLast),
                literal => {
                    check_segment(index, literal)?;
                    Segment::Literal(literal.into())
                }
            };
            segments.push(seg);
        }
        // `a.>` is a valid pattern: it stands for topics of two or more segments.
        if !matches!(segments.last(), Some(Segment::Rest)) {
            check_segment_count(segments.len())?;
        } else if segments.len() > MAX_SEGMENTS {
            return Err(NameError::SegmentCount {
                found: segments.len(),
            });
        }
        Ok(Self {
            segments: segments.into_boxed_slice(),
        })
    }

    /// Does `topic` (already validated) match? Allocation-free.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for seg in self.segments.iter() {
            match seg {
                Segment::Rest => return parts.next().is_some(),
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => match parts.next() {
                    Some(p) if p == &**lit => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// True when every topic `other` matches is also matched by `self` (a grant covers a
    /// subscription).
    pub fn covers(&self, other: &Pattern) -> bool {
        let mut theirs = other.segments.iter();
        for seg in self.segments.iter() {
            let next = theirs.next();
            match (seg, next) {
                // `>` takes one or more segments: whatever `other` has left, if anything.
                (Segment::Rest, Some(_)) => return true,
                (_, None) => return false,
                (Segment::One, Some(Segment::Literal(_) | Segment::One)) => {}
                (Segment::Literal(a), Some(Segment::Literal(b))) if a == b => {}
                _ => return false,
            }
        }
        theirs.next().is_none()
    }

    /// True when the pattern has no wildcard, so it matches exactly one topic.
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn covers_is_pattern_containment() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("lab.>").covers(&p("lab.*.temp")));
        assert!(p("lab.>").covers(&p("lab.>")));
        assert!(p(">").covers(&p("a.b")));
        assert!(p("lab.*").covers(&p("lab.x")));
        assert!(!p("lab.*").covers(&p("lab.>")));
        assert!(!p("lab.x").covers(&p("lab.*")));
        assert!(!p("lab.>").covers(&p(">")));
        assert!(!p("lab.a").covers(&p("lab.a.b")));
        assert!(!p("lab.a.b").covers(&p("lab.a")));
    }

    proptest! {
        #[test]
        fn covers_agrees_with_matching(
            grant in "(a|b|\\*)(\\.(a|b|\\*)){1,3}(\\.>)?",
            sub in "(a|b|\\*)(\\.(a|b|\\*)){1,3}(\\.>)?",
            topic in "(a|b)(\\.(a|b)){1,5}",
        ) {
            let (g, s) = (Pattern::parse(&grant).unwrap(), Pattern::parse(&sub).unwrap());
            if g.covers(&s) && s.matches(&topic) {
                prop_assert!(g.matches(&topic), "{grant} covers {sub} but not {topic}");
            }
        }
    }

    #[test]
    fn topics() {
        for ok in ["a.b", "nvm.job.submit", "a-b.c_d.e1", "a.b.c.d.e.f.g.h"] {
            assert_eq!(validate_topic(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a.",
            ".a",
            "a..b",
            "A.b",
            "a.b c",
            "a.*",
            "a.>",
            "a.b.c.d.e.f.g.h.i",
            "a.é",
        ] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
        assert!(validate_topic(&format!("a.{}", "b".repeat(300))).is_err());
    }

    #[test]
    fn realities() {
        assert!(validate_reality("lab-1.Rig_2").is_ok());
        for bad in ["", "a b", "a/b", "é"] {
            assert!(validate_reality(bad).is_err(), "{bad}");
        }
        assert!(validate_reality(&"r".repeat(129)).is_err());
    }

    #[test]
    fn wildcards() {
        let p = Pattern::parse("lab.*.done").unwrap();
        assert!(p.matches("lab.rig1.done"));
        assert!(!p.matches("lab.rig1.x.done"));
        assert!(!p.matches("lab.done"));
        let r = Pattern::parse("lab.>").unwrap();
        assert!(r.matches("lab.rig1"));
        assert!(r.matches("lab.rig1.sensor.temp"));
        assert!(!r.matches("lab"));
        assert!(!r.matches("labx.rig1"));
        let all = Pattern::parse(">").unwrap();
        assert!(all.matches("a.b"));
        assert!(Pattern::parse("a.>.b").is_err());
        assert!(Pattern::parse("a.b*").is_err());
        assert!(Pattern::parse("a").is_err());
        assert!(Pattern::parse("*.*").unwrap().matches("x.y"));
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9_-]{1,6}"
    }

    fn topic() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(segment(), 2..=8)
    }

    proptest! {
        #[test]
        fn literal_pattern_matches_only_itself(t in topic(), u in topic()) {
            let t = t.join(".");
            let u = u.join(".");
            let p = Pattern::parse(&t).unwrap();
            prop_assert!(p.is_literal());
            prop_assert!(p.matches(&t));
            prop_assert_eq!(p.matches(&u), t == u);
        }

        #[test]
        fn star_matches_any_single_segment(t in topic(), idx in 0usize..8, other in segment()) {
            let idx = idx % t.len();
            let mut pat = t.clone();
            pat[idx] = "*".into();
            let p = Pattern::parse(&pat.join(".")).unwrap();
            let mut t2 = t.clone();
            t2[idx] = other;
            prop_assert!(p.matches(&t.join(".")));
            prop_assert!(p.matches(&t2.join(".")));
            // One segment more or fewer never matches a `*` pattern without `>`.
            let mut longer = t.clone();
            longer.push("x".into());
            if longer.len() <= 8 {
                prop_assert!(!p.matches(&longer.join(".")));
            }
        }

        #[test]
        fn rest_matches_exactly_the_longer_topics(t in topic(), keep in 1usize..8) {
            let keep = keep.min(t.len() - 1).max(1);
            let prefix = t[..keep].join(".");
            let p = Pattern::parse(&format!("{prefix}.>")).unwrap();
            prop_assert!(p.matches(&t.join(".")));
            // The prefix alone has nothing for `>` to match.
            prop_assert!(!p.matches(&prefix));
        }

        #[test]
        fn validate_never_panics(s in "\\PC{0,40}") {
            let _ = validate_topic(&s);
            let _ = Pattern::parse(&s);
            let _ = validate_reality(&s);
        }
    }
}
