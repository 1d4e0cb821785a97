//! Presence (the Brain): per reality, who is there. A session is present in a reality while it
//! has a subscription there. Its shard tells the reality's owner when that starts, changes (its
//! patterns) and ends — unsubscribe, close, a peer that died (kill -9 closes the socket; a
//! vanished one is found by TCP keepalive). The owner keeps the list, answers `PresenceGet`, and
//! sequences the changes into the reality on `sys.presence.changes`, gathered over
//! `limits.presence_coalesce_ms` so that a thousand joins in a burst are a few pulses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arqonbus_proto::v1::{Presence, PresenceChange, PresenceEntry};

/// Where the owner sequences presence changes.
pub const TOPIC: &str = "sys.presence.changes";
/// Entries per `Presence` page when the request asks for none (or more).
pub const PAGE: usize = 1000;

/// A change a subscriber's shard sends to the owner.
#[derive(Debug, Clone)]
pub enum Update {
    /// The session is present (or its entry changed): the whole entry.
    Present(PresenceEntry),
    /// The session left (by id).
    Left(String),
}

#[derive(Default)]
struct RealityPresence {
    entries: BTreeMap<String, PresenceEntry>,
    present: BTreeMap<String, PresenceEntry>,
    left: BTreeSet<String>,
}

/// The owner's side: who is present in the realities it owns, and what changed since the last
/// `sys.presence.changes`.
pub struct OwnerPresence {
    by_reality: HashMap<Arc<str>, RealityPresence>,
    max_per_reality: usize,
    /// `[presence] announce`: the realities whose changes are sequenced.
    announce: Vec<crate::policy::RealityGlob>,
}

impl OwnerPresence {
    pub fn new(max_per_reality: usize, announce: &[String]) -> Self {
        Self {
            by_reality: HashMap::new(),
            max_per_reality,
            announce: announce
                .iter()
                .filter_map(|g| crate::policy::RealityGlob::parse(g).ok())
                .collect(),
        }
    }

    /// Applies an update. Returns true when the reality announces its changes and had nothing
    /// pending (the caller starts the coalescing window).
    /// True when `reality` has presence state (sessions listed or changes pending).
    pub fn holds(&self, reality: &str) -> bool {
        self.by_reality.contains_key(reality)
    }

    pub fn apply(&mut self, reality: &str, update: Update) -> bool {
        let announced = self.announce.iter().any(|g| g.matches(reality));
        let r = match self.by_reality.get_mut(reality) {
            Some(r) => r,
            None => self.by_reality.entry(Arc::from(reality)).or_default(),
        };
        let was_idle = r.present.is_empty() && r.left.is_empty();
        match update {
            Update::Present(entry) => {
                let id = entry.session_id.clone();
                if !r.entries.contains_key(&id) && r.entries.len() >= self.max_per_reality {
                    return false;
                }
                r.left.remove(&id);
                r.entries.insert(id.clone(), entry.clone());
                if announced {
                    r.present.insert(id, entry);
                }
            }
            Update::Left(id) => {
                if r.entries.remove(&id).is_none() {
                    return false;
                }
                // Joined and left within one window: nobody needs to hear of either.
                if r.present.remove(&id).is_none() && announced {
                    r.left.insert(id);
                }
            }
        }
        was_idle && !(r.present.is_empty() && r.left.is_empty())
    }

    /// Takes every reality's pending changes: one `PresenceChange` each, split so that none
    /// holds more than [`PAGE`] entries and ids (a pulse stays far below a frame's size).
    pub fn take_pending(&mut self) -> Vec<(String, PresenceChange)> {
        let mut out = Vec::new();
        self.by_reality.retain(|reality, r| {
            let mut present: Vec<PresenceEntry> =
                std::mem::take(&mut r.present).into_values().collect();
            let mut left: Vec<String> = std::mem::take(&mut r.left).into_iter().collect();
            while !present.is_empty() || !left.is_empty() {
                let p: Vec<_> = present.drain(..present.len().min(PAGE)).collect();
                let l: Vec<_> = left.drain(..left.len().min(PAGE - p.len())).collect();
                out.push((
                    reality.to_string(),
                    PresenceChange {
                        present: p,
                        left: l,
                    },
                ));
            }
            !r.entries.is_empty()
        });
        out
    }

    /// One page of a reality's presence, ordered by session id.
    pub fn page(&self, reality: &str, offset: usize, limit: usize) -> Presence {
        let limit = if limit == 0 { PAGE } else { limit.min(PAGE) };
        let r = self.by_reality.get(reality);
        Presence {
            reality_id: reality.to_owned(),
            entries: r
                .map(|r| {
                    r.entries
                        .values()
                        .skip(offset)
                        .take(limit)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            total: r.map_or(0, |r| r.entries.len() as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> PresenceEntry {
        PresenceEntry {
            session_id: id.into(),
            patterns: vec![">".into()],
            ..Default::default()
        }
    }

    #[test]
    fn changes_coalesce_and_pages_follow_the_list() {
        let mut p = OwnerPresence::new(10, &["*".into()]);
        assert!(p.apply("r", Update::Present(entry("a"))), "opens a window");
        assert!(!p.apply("r", Update::Present(entry("b"))));
        assert!(!p.apply("r", Update::Present(entry("c"))));
        assert!(
            !p.apply("r", Update::Left("c".into())),
            "in and out: no news"
        );
        let pending = p.take_pending();
        assert_eq!(pending.len(), 1);
        let ids: Vec<&str> = pending[0]
            .1
            .present
            .iter()
            .map(|e| e.session_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(pending[0].1.left.is_empty());
        assert!(p.take_pending().is_empty());

        assert!(p.apply("r", Update::Left("a".into())));
        assert!(
            !p.apply("r", Update::Left("zz".into())),
            "unknown sessions change nothing"
        );
        let pending = p.take_pending();
        assert_eq!(pending[0].1.left, ["a"]);
        let page = p.page("r", 0, 0);
        assert_eq!(page.total, 1);
        assert_eq!(page.entries[0].session_id, "b");
        assert!(p.page("r", 1, 5).entries.is_empty());
        assert_eq!(p.page("nowhere", 0, 5).total, 0);
    }

    #[test]
    fn big_changes_are_split_into_pages() {
        let mut p = OwnerPresence::new(10_000, &["*".into()]);
        for i in 0..2500 {
            p.apply("r", Update::Present(entry(&format!("s{i:05}"))));
        }
        let pending = p.take_pending();
        let sizes: Vec<usize> = pending.iter().map(|(_, c)| c.present.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[test]
    fn only_announced_realities_have_pending_changes() {
        let mut p = OwnerPresence::new(10, &["lab-*".into()]);
        assert!(!p.apply("quiet", Update::Present(entry("a"))));
        assert!(p.take_pending().is_empty());
        assert_eq!(p.page("quiet", 0, 0).total, 1, "listed all the same");
        assert!(p.apply("lab-1", Update::Present(entry("a"))));
        assert_eq!(p.take_pending().len(), 1);
    }

    #[test]
    fn the_list_is_bounded() {
        let mut p = OwnerPresence::new(2, &["*".into()]);
        for id in ["a", "b", "c"] {
            p.apply("r", Update::Present(entry(id)));
        }
        assert_eq!(p.page("r", 0, 0).total, 2);
        p.apply("r", Update::Left("a".into()));
        p.apply("r", Update::Present(entry("c")));
        assert_eq!(p.page("r", 0, 0).total, 2);
    }
}
