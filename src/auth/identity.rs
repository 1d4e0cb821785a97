//! Who a session is, and what it may touch.

use std::sync::Arc;

use super::token::{Claims, Role};
use crate::routing::Pattern;

/// `reality-glob:topic-pattern`: realities by glob (`*`, `?`), topics by subscription pattern.
/// A grant without `:` covers every topic of the realities it names.
#[derive(Debug, Clone)]
pub struct Grant {
    realities: wildmatch::WildMatch,
    /// The reality glob as written, for containment checks (`covers_realities`).
    realities_text: Box<str>,
    topics: Pattern,
}

impl Grant {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (realities, topics) = text.split_once(':').unwrap_or((text, ">"));
        if realities.is_empty() {
            return Err(format!("grant `{text}` names no reality glob"));
        }
        let topics = Pattern::parse(topics)
            .map_err(|e| format!("grant `{text}` has an invalid topic pattern: {e}"))?;
        Ok(Self {
            realities: wildmatch::WildMatch::new(realities),
            realities_text: realities.into(),
            topics,
        })
    }

    fn allows_topic(&self, reality: &str, topic: &str) -> bool {
        self.realities.matches(reality) && self.topics.matches(topic)
    }

    fn covers(&self, reality: &str, pattern: &Pattern) -> bool {
        self.realities.matches(reality) && self.topics.covers(pattern)
    }
}

/// What a session may do.
#[derive(Debug, Clone)]
pub enum Access {
    /// No token involved (tokens not required) or role `admin`: any reality, any topic, except
    /// that `sys.control.*` still needs role `controller`.
    Unrestricted,
    Granted {
        publish: Vec<Grant>,
        subscribe: Vec<Grant>,
    },
}

/// The identity of a session, fixed at Hello.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tenant: Arc<str>,
    pub subject: String,
    pub roles: Vec<Role>,
    pub access: Access,
    /// Unix seconds after which requests are refused (the token's expiry).
    pub expires_unix_secs: Option<u64>,
    /// The capabilities a manifest may claim (a token's `capabilities`); `None`: any.
    pub capabilities: Option<Vec<String>>,
    /// Settled by a signed token: the revocation list (`auth.revocation_file`) applies.
    pub from_token: bool,
    /// The token's id (`jti`), when it has one.
    pub token_id: Option<String>,
}

/// Topics under this prefix steer the bus; publishing there needs role `controller`.
pub const CONTROL_PREFIX: &str = "sys.control.";

impl Identity {
    /// A session that brought no token: publisher and subscriber everywhere.
    pub fn anonymous(tenant: Arc<str>, subject: String) -> Self {
        Self {
            tenant,
            subject,
            roles: vec![Role::Publisher, Role::Subscriber],
            access: Access::Unrestricted,
            expires_unix_secs: None,
            capabilities: None,
            from_token: false,
            token_id: None,
        }
    }

    /// A session that said Hello with a static `control.controller_tokens` entry.
    pub fn static_controller(tenant: Arc<str>) -> Self {
        Self {
            tenant,
            subject: "controller".into(),
            roles: vec![Role::Controller, Role::Publisher, Role::Subscriber],
            access: Access::Unrestricted,
            expires_unix_secs: None,
            capabilities: None,
            from_token: false,
            token_id: None,
        }
    }

    /// The identity a verified token describes.
    pub fn from_claims(claims: Claims) -> Result<Self, String> {
        let parse = |list: &[String]| -> Result<Vec<Grant>, String> {
            list.iter().map(|g| Grant::parse(g)).collect()
        };
        let access = if claims.roles.contains(&Role::Admin) {
            Access::Unrestricted
        } else {
            Access::Granted {
                publish: parse(&claims.publish)?,
                subscribe: parse(&claims.subscribe)?,
            }
        };
        Ok(Self {
            tenant: Arc::from(claims.tenant),
            subject: claims.sub,
            roles: claims.roles,
            access,
            expires_unix_secs: Some(claims.exp),
            capabilities: claims.capabilities,
            from_token: true,
            token_id: claims.jti,
        })
    }

    /// Whether a manifest may claim these capabilities.
    pub fn check_capabilities(&self, claimed: &[String]) -> Result<(), String> {
        let Some(allowed) = &self.capabilities else {
            return Ok(());
        };
        match claimed.iter().find(|c| !allowed.contains(c)) {
            None => Ok(()),
            Some(c) => Err(format!(
                "the manifest claims capability `{c}`, which this session's token does not \
                 allow (allowed: {})",
                allowed.join(", ")
            )),
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    fn check_expiry(&self, now_unix_secs: u64) -> Result<(), String> {
        match self.expires_unix_secs {
            Some(exp) if exp <= now_unix_secs => Err(format!(
                "the session's token expired at {exp} (Unix seconds); reconnect with a new one"
            )),
            _ => Ok(()),
        }
    }

    /// May this controller bind a policy or hosted operator to the realities `glob` names? A
    /// binding reaches every tenant whose realities it matches, so a controller of a token with
    /// grants may bind only realities one of its publish grants covers (all of them, not just
    /// some: `glob_covers`), and a global binding (`*`) needs role `admin`. Sessions without
    /// grants (role `admin`, the static `control.controller_tokens`, which the bus's operator
    /// configures) are not limited.
    pub fn check_binding(&self, glob: &crate::policy::RealityGlob) -> Result<(), String> {
        let Access::Granted { publish, .. } = &self.access else {
            return Ok(());
        };
        if glob.is_global() {
            return Err(format!(
                "binding `{}` covers every reality, every tenant's: it needs role `admin`",
                glob.as_str()
            ));
        }
        if publish
            .iter()
            .any(|g| crate::policy::glob_covers(&g.realities_text, glob.as_str()))
        {
            return Ok(());
        }
        Err(format!(
            "binding `{}` names realities no publish grant of this session covers; a controller \
             binds only realities its grants cover",
            glob.as_str()
        ))
    }

    /// May this controller steer `reality` (`what` says how, for the message): set its
    /// parameters or its operators' parameters, fork it or into it, install a circuit in it? The
    /// same rule as bindings ([`Self::check_binding`]) for one literal reality: a controller of a
    /// token with grants steers only realities one of its publish grants covers. Sessions without
    /// grants (role `admin`, the static `control.controller_tokens`) are not limited.
    pub fn check_reality(&self, reality: &str, what: &str) -> Result<(), String> {
        let Access::Granted { publish, .. } = &self.access else {
            return Ok(());
        };
        // A reality id has no wildcard, so covering it is matching it.
        if publish.iter().any(|g| g.realities.matches(reality)) {
            return Ok(());
        }
        Err(format!(
            "{what} reality `{reality}`, which no publish grant of this session covers; a \
             controller steers only realities its grants cover"
        ))
    }

    /// May this session publish `topic` in `reality`? The error is for the client.
    pub fn check_publish(
        &self,
        reality: &str,
        topic: &str,
        now_unix_secs: u64,
    ) -> Result<(), String> {
        self.check_expiry(now_unix_secs)?;
        if topic.starts_with(CONTROL_PREFIX) {
            if !self.has_role(Role::Controller) {
                return Err(format!("publishing to `{topic}` needs role `controller`"));
            }
            // A controller steers every reality of its tenant.
            return Ok(());
        }
        if !self.has_role(Role::Publisher) {
            return Err("this session's token has no `publisher` role".into());
        }
        match &self.access {
            Access::Unrestricted => Ok(()),
            Access::Granted { publish, .. } => {
                if publish.iter().any(|g| g.allows_topic(reality, topic)) {
                    Ok(())
                } else {
                    Err(format!(
                        "no publish grant covers reality `{reality}` topic `{topic}`"
                    ))
                }
            }
        }
    }

    /// May this session subscribe to (or read the history of) `pattern` in `reality`?
    /// Whether the session may read a reality's parameters (`ParamsGet`): it may subscribe to
    /// something there — the same sessions the parameters are broadcast to.
    pub fn check_params(&self, reality: &str, now_unix_secs: u64) -> Result<(), String> {
        self.check_expiry(now_unix_secs)?;
        if !self.has_role(Role::Subscriber) {
            return Err("this session's token has no `subscriber` role".into());
        }
        match &self.access {
            Access::Unrestricted => Ok(()),
            Access::Granted { subscribe, .. } => {
                if subscribe.iter().any(|g| g.realities.matches(reality)) {
                    Ok(())
                } else {
                    Err(format!("no subscribe grant covers reality `{reality}`"))
                }
            }
        }
    }

    pub fn check_subscribe(
        &self,
        reality: &str,
        pattern: &Pattern,
        text: &str,
        now_unix_secs: u64,
    ) -> Result<(), String> {
        self.check_expiry(now_unix_secs)?;
        if !self.has_role(Role::Subscriber) {
            return Err("this session's token has no `subscriber` role".into());
        }
        match &self.access {
            Access::Unrestricted => Ok(()),
            Access::Granted { subscribe, .. } => {
                if subscribe.iter().any(|g| g.covers(reality, pattern)) {
                    Ok(())
                } else {
                    Err(format!(
                        "no subscribe grant covers reality `{reality}` pattern `{text}`"
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_identity(roles: Vec<Role>, publish: &[&str], subscribe: &[&str]) -> Identity {
        Identity::from_claims(Claims {
            tenant: "lab".into(),
            sub: "ada".into(),
            roles,
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            exp: 1000,
            iat: 0,
            capabilities: None,
            kid: None,
            jti: None,
            aud: None,
        })
        .unwrap()
    }

    #[test]
    fn publish_grants_are_per_reality_and_topic() {
        let id = token_identity(vec![Role::Publisher], &["lab-*:rig.>"], &[]);
        assert!(id.check_publish("lab-1", "rig.a.temp", 1).is_ok());
        assert!(id.check_publish("prod", "rig.a.temp", 1).is_err());
        assert!(id.check_publish("lab-1", "other.a", 1).is_err());
        assert!(
            id.check_publish("lab-1", "rig.a.temp", 1000).is_err(),
            "expired"
        );
        assert!(id.check_publish("lab-1", "sys.control.load", 1).is_err());
    }

    #[test]
    fn subscribe_grants_must_cover_the_whole_pattern() {
        let id = token_identity(vec![Role::Subscriber], &[], &["lab-1:rig.>"]);
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(id.check_subscribe("lab-1", &p("rig.*.temp"), "", 1).is_ok());
        assert!(id.check_subscribe("lab-1", &p(">"), "", 1).is_err());
        assert!(id.check_subscribe("lab-2", &p("rig.>"), "", 1).is_err());
    }

    #[test]
    fn a_granted_controller_steers_only_realities_its_grants_cover() {
        let lab = token_identity(vec![Role::Controller], &["lab-a*:>"], &[]);
        assert!(lab.check_reality("lab-a", "sets").is_ok());
        assert!(lab.check_reality("lab-a~fork", "forks into").is_ok());
        let why = lab.check_reality("lab-b", "sets").unwrap_err();
        assert!(why.contains("sets reality `lab-b`"), "{why}");
        let admin = token_identity(vec![Role::Admin], &[], &[]);
        assert!(admin.check_reality("lab-b", "sets").is_ok());
        let ops = Identity::static_controller(Arc::from("anonymous"));
        assert!(ops.check_reality("lab-b", "sets").is_ok());
    }

    #[test]
    fn roles_gate_the_verbs_and_control_topics() {
        let sub_only = token_identity(vec![Role::Subscriber], &["*:>"], &["*:>"]);
        assert!(sub_only.check_publish("r", "a.b", 1).is_err());
        let controller = token_identity(vec![Role::Controller], &[], &[]);
        assert!(controller
            .check_publish("r", "sys.control.policy", 1)
            .is_ok());
        let admin = token_identity(vec![Role::Admin], &[], &[]);
        assert!(admin.check_publish("r", "sys.control.policy", 1).is_ok());
        assert!(admin
            .check_subscribe("r", &Pattern::parse(">").unwrap(), ">", 1)
            .is_ok());
        let anon = Identity::anonymous(Arc::from("anonymous"), String::new());
        assert!(anon.check_publish("r", "a.b", 1).is_ok());
        assert!(anon.check_publish("r", "sys.control.x", 1).is_err());
    }
}
