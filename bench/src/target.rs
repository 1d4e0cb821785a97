//! Where the load goes: `arqonbus://HOST:PORT` or `nats://HOST:PORT`, loopback unless allowed.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Arqon,
    Nats,
}

impl Kind {
    /// Short name used in file names and reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Arqon => "arqonbus",
            Kind::Nats => "nats",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    pub url: String,
    /// The first resolved address; every one was checked against the loopback rule.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses and resolves `url`. Unless `allow_non_loopback`, every address the host resolves
    /// to must be in 127.0.0.0/8 or ::1: this harness floods what it points at.
    pub fn parse(url: &str, allow_non_loopback: bool) -> Result<Target> {
        let (kind, rest) = if let Some(rest) = url.strip_prefix("arqonbus://") {
            (Kind::Arqon, rest)
        } else if let Some(rest) = url.strip_prefix("nats://") {
            (Kind::Nats, rest)
        } else {
            bail!("target {url:?}: expected arqonbus://HOST:PORT or nats://HOST:PORT");
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            bail!("target {url:?}: expected only HOST:PORT after the scheme");
        }
        let addrs: Vec<SocketAddr> = authority
            .to_socket_addrs()
            .with_context(|| format!("target {url:?}: cannot resolve {authority:?} (HOST:PORT)"))?
            .collect();
        let Some(&addr) = addrs.first() else {
            bail!("target {url:?}: {authority:?} resolves to no address");
        };
        if !allow_non_loopback {
            if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                bail!(
                    "target {url:?} resolves to {}, which is not a loopback address; this \
                     harness only loads 127.0.0.0/8 and ::1 unless --allow-non-loopback is given",
                    bad.ip()
                );
            }
        }
        Ok(Target {
            kind,
            url: url.to_string(),
            addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes_on_loopback() {
        let t = Target::parse("arqonbus://127.0.0.1:4222", false).unwrap();
        assert_eq!(t.kind, Kind::Arqon);
        assert_eq!(t.addr, "127.0.0.1:4222".parse().unwrap());
        let t = Target::parse("nats://127.0.0.9:1/", false).unwrap();
        assert_eq!(t.kind, Kind::Nats);
        let t = Target::parse("nats://[::1]:4222", false).unwrap();
        assert!(t.addr.ip().is_loopback());
    }

    #[test]
    fn refuses_non_loopback_unless_allowed() {
        let err = Target::parse("nats://192.0.2.1:4222", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--allow-non-loopback"), "{err}");
        assert!(Target::parse("nats://192.0.2.1:4222", true).is_ok());
    }

    #[test]
    fn rejects_other_schemes_and_paths() {
        assert!(Target::parse("http://127.0.0.1:80", false).is_err());
        assert!(Target::parse("nats://127.0.0.1:4222/x", false).is_err());
        assert!(Target::parse("nats://user@127.0.0.1:4222", false).is_err());
        assert!(Target::parse("arqonbus://127.0.0.1", false).is_err());
    }
}
