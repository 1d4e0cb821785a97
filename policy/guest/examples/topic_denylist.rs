//! `topic_denylist`: blocks pulses whose topic matches any pattern in the policy's `topics`
//! parameter (comma-separated topic patterns, e.g. `"lab.*.reset, rig.>"`).
//!
//! Reason codes: 1 = the topic is denied, 3 = the policy is misconfigured (no `topics`).
#![no_std]

use arqonbus_policy_guest::{arqon_policy, deny, topic_matches, PolicyInput, Verdict};

pub const DENIED_TOPIC: u32 = 1;
pub const MISCONFIGURED: u32 = 3;

fn inspect(input: &PolicyInput) -> Verdict {
    let Some(list) = input.param("topics") else {
        return Verdict::deny(
            MISCONFIGURED,
            "topic_denylist needs the parameter topics (comma-separated topic patterns)",
        );
    };
    for pattern in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if topic_matches(pattern, input.topic) {
            return deny!(
                DENIED_TOPIC,
                "topic {} is denied by pattern `{pattern}`",
                input.topic
            );
        }
    }
    Verdict::Allow
}

arqon_policy!(inspect);
