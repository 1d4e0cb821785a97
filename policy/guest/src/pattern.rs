//! Topic patterns, as the bus defines them: `*` is exactly one segment, a last `>` is one or
//! more segments.

/// Does `topic` match `pattern`? Allocation-free.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut parts = topic.split('.');
    let mut segs = pattern.split('.').peekable();
    while let Some(seg) = segs.next() {
        match seg {
            ">" if segs.peek().is_none() => return parts.next().is_some(),
            "*" => {
                if parts.next().is_none() {
                    return false;
                }
            }
            literal => match parts.next() {
                Some(p) if p == literal => {}
                _ => return false,
            },
        }
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_the_bus() {
        assert!(topic_matches("nvm.job.submit", "nvm.job.submit"));
        assert!(!topic_matches("nvm.job.submit", "nvm.job.submitx"));
        assert!(topic_matches("nvm.*.submit", "nvm.job.submit"));
        assert!(!topic_matches("nvm.*", "nvm.job.submit"));
        assert!(topic_matches("nvm.>", "nvm.job.submit"));
        assert!(!topic_matches("nvm.>", "nvm"));
        assert!(topic_matches(">", "a.b"));
    }
}
