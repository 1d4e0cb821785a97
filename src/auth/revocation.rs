//! The revocation list: tokens that must no longer be accepted before their `exp`.
//!
//! `auth.revocation_file` is a text file, one entry a line, blank lines and `#` comments
//! ignored:
//!
//! ```text
//! # one token, by its id (the `jti` claim `arqonbus token issue` prints on stderr)
//! jti 0193a1f2-7c4e-7d2a-9b1e-3f0c2d4e5a6b
//! # every token of one subject of one tenant
//! subject lab/ada
//! ```
//!
//! It is read at start (an unreadable or malformed file stops the start) and again whenever the
//! server's reload flag is raised (SIGHUP), on the reload thread, never on a shard. A reload that
//! fails keeps the previous list and says why in the log. Each reload bumps a generation: shards
//! compare it with the one they last saw (one atomic load per Hello and per heartbeat), take the
//! new list once, and close the sessions it revokes.
//!
//! The list applies to sessions settled by a signed token. Client certificates are revoked by
//! their CA, and the static `control.controller_tokens` by editing the configuration.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::Identity;

/// Why a revocation file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("cannot read auth.revocation_file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "auth.revocation_file {path} is larger than auth.max_revocation_file_bytes ({max_bytes}); \
         raise the bound or prune the list"
    )]
    TooLarge { path: PathBuf, max_bytes: u64 },
    #[error("auth.revocation_file {path} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One version of the list.
#[derive(Debug, Default)]
pub struct Revoked {
    token_ids: HashSet<String>,
    /// tenant -> subjects.
    subjects: HashMap<String, HashSet<String>>,
}

impl Revoked {
    /// Parses the file's text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, RevocationError> {
        let mut revoked = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| RevocationError::Line {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let (kind, value) = line
                .split_once(char::is_whitespace)
                .map(|(k, v)| (k, v.trim()))
                .ok_or_else(|| {
                    bad(format!(
                        "`{line}` is not `jti <id>` or `subject <tenant>/<subject>`"
                    ))
                })?;
            match kind {
                "jti" => {
                    revoked.token_ids.insert(value.to_owned());
                }
                "subject" => {
                    // The first `/` splits, as in a client certificate's common name.
                    let (tenant, subject) = value
                        .split_once('/')
                        .filter(|(t, s)| !t.is_empty() && !s.is_empty())
                        .ok_or_else(|| {
                            bad(format!("subject `{value}` is not `<tenant>/<subject>`"))
                        })?;
                    revoked
                        .subjects
                        .entry(tenant.to_owned())
                        .or_default()
                        .insert(subject.to_owned());
                }
                other => {
                    return Err(bad(format!(
                        "unknown entry kind `{other}`; entries are `jti <id>` and \
                         `subject <tenant>/<subject>`"
                    )))
                }
            }
        }
        Ok(revoked)
    }

    /// Whether the list revokes this session's token: the reason, for the client.
    pub fn revokes(&self, identity: &Identity) -> Option<String> {
        if !identity.from_token {
            return None;
        }
        if let Some(id) = identity
            .token_id
            .as_deref()
            .filter(|id| self.token_ids.contains(*id))
        {
            return Some(format!("token `{id}` is revoked"));
        }
        let subjects = self.subjects.get(&*identity.tenant)?;
        subjects.contains(&identity.subject).then(|| {
            format!(
                "the tokens of `{}/{}` are revoked",
                identity.tenant, identity.subject
            )
        })
    }

    /// Entries in the list.
    pub fn len(&self) -> usize {
        self.token_ids.len() + self.subjects.values().map(HashSet::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The list as the server holds it: the file, the current version and its generation.
#[derive(Debug)]
pub struct RevocationList {
    path: PathBuf,
    max_bytes: u64,
    current: RwLock<Arc<Revoked>>,
    /// Bumped after every successful reload; shards compare it with what they last saw.
    generation: AtomicU64,
}

impl RevocationList {
    /// Reads the file for the first time.
    pub fn load(path: PathBuf, max_bytes: u64) -> Result<Self, RevocationError> {
        let revoked = read(&path, max_bytes)?;
        Ok(Self {
            path,
            max_bytes,
            current: RwLock::new(Arc::new(revoked)),
            generation: AtomicU64::new(1),
        })
    }

    /// Reads the file again; on an error the previous list stays. The number of entries.
    pub fn reload(&self) -> Result<usize, RevocationError> {
        let revoked = Arc::new(read(&self.path, self.max_bytes)?);
        let entries = revoked.len();
        // A poisoned lock held only an `Arc` swap: the value inside is whole either way.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = revoked;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(entries)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current list and its generation (read the generation first: a reload between the
    /// two reads makes the caller take the list again next time, never miss it).
    pub fn current(&self) -> (u64, Arc<Revoked>) {
        let generation = self.generation();
        let list = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (generation, list)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read(path: &Path, max_bytes: u64) -> Result<Revoked, RevocationError> {
    let failed = |source| RevocationError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    // Read one byte past the bound to tell "exactly at it" from "over it" without trusting the
    // file's size, which may change while it is read.
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > max_bytes {
        return Err(RevocationError::TooLarge {
            path: path.to_owned(),
            max_bytes,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| RevocationError::Line {
        path: path.to_owned(),
        line: 0,
        reason: format!("the file is not UTF-8 ({e})"),
    })?;
    Revoked::parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Claims, Role};

    fn identity(tenant: &str, sub: &str, jti: Option<&str>) -> Identity {
        Identity::from_claims(Claims {
            tenant: tenant.into(),
            sub: sub.into(),
            roles: vec![Role::Publisher],
            publish: vec![],
            subscribe: vec![],
            exp: 100,
            iat: 0,
            capabilities: None,
            kid: None,
            jti: jti.map(str::to_owned),
            aud: None,
        })
        .unwrap()
    }

    #[test]
    fn entries_revoke_by_token_id_and_by_subject() {
        let text = "# revoked\n\njti t-1\n  subject lab/ada  \nsubject lab/a/b\n";
        let list = Revoked::parse(Path::new("r"), text).unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.revokes(&identity("lab", "bob", Some("t-1"))).is_some());
        assert!(list.revokes(&identity("lab", "ada", None)).is_some());
        assert!(list.revokes(&identity("lab", "a/b", None)).is_some());
        assert!(list.revokes(&identity("lab", "bob", Some("t-2"))).is_none());
        assert!(list.revokes(&identity("other", "ada", None)).is_none());
        // Not settled by a token: the list does not apply.
        let anonymous = Identity::anonymous(Arc::from("lab"), "ada".into());
        assert!(list.revokes(&anonymous).is_none());
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        for (text, line) in [
            ("jti a\nsubject lab\n", 2),
            ("token x\n", 1),
            ("\n\njti\n", 3),
            ("subject /ada\n", 1),
        ] {
            match Revoked::parse(Path::new("r"), text) {
                Err(RevocationError::Line { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn reload_swaps_the_list_and_bumps_the_generation_and_a_bad_file_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked");
        std::fs::write(&path, "jti a\n").unwrap();
        let list = RevocationList::load(path.clone(), 64).unwrap();
        let (g1, first) = list.current();
        assert_eq!(first.len(), 1);
        std::fs::write(&path, "jti a\njti b\n").unwrap();
        assert_eq!(list.reload().unwrap(), 2);
        let (g2, second) = list.current();
        assert!(g2 > g1);
        assert_eq!(second.len(), 2);
        std::fs::write(&path, "x".repeat(65)).unwrap();
        assert!(matches!(
            list.reload(),
            Err(RevocationError::TooLarge { .. })
        ));
        std::fs::write(&path, "nonsense here\n").unwrap();
        assert!(list.reload().is_err());
        let (g3, third) = list.current();
        assert_eq!((g3, third.len()), (g2, 2), "the previous list stays");
        assert!(RevocationList::load(dir.path().join("missing"), 64).is_err());
    }
}
