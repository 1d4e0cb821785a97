//! `energy_cap`: blocks `nvm.job.submit` pulses whose `arqon.nvm.v1.NvmJob` asks for more energy
//! than the policy's `max_energy_joules` parameter allows.
//!
//! Reason codes: 1 = over the cap, 2 = the payload is not a decodable NvmJob, 3 = the policy is
//! misconfigured (no usable `max_energy_joules`). It fails closed: a job whose energy it cannot
//! read is refused, and so is a NaN.
#![no_std]

use arqonbus_policy_guest::{arqon_policy, deny, pb, PolicyInput, Verdict};

const NVM_JOB: &str = "type.googleapis.com/arqon.nvm.v1.NvmJob";
/// `NvmJob.energy_joules` (a double: wire type fixed64).
const ENERGY_JOULES_FIELD: u32 = 3;

pub const OVER_CAP: u32 = 1;
pub const NOT_A_JOB: u32 = 2;
pub const MISCONFIGURED: u32 = 3;

fn inspect(input: &PolicyInput) -> Verdict {
    let Some(cap) = input.param_f64("max_energy_joules") else {
        return Verdict::deny(
            MISCONFIGURED,
            "energy_cap needs the parameter max_energy_joules (joules, a number)",
        );
    };
    if input.payload_type_url != NVM_JOB {
        return deny!(
            NOT_A_JOB,
            "{} must carry an arqon.nvm.v1.NvmJob, not `{}`",
            input.topic,
            input.payload_type_url
        );
    }
    let energy = match pb::last_field(input.payload, ENERGY_JOULES_FIELD) {
        Ok(Some(pb::Value::Fixed64(bits))) => f64::from_bits(bits),
        // proto3 leaves a zero double out of the encoding.
        Ok(None) => 0.0,
        _ => return deny!(NOT_A_JOB, "the NvmJob payload does not decode"),
    };
    // NaN compares as nothing: it is refused along with everything over the cap.
    let within = matches!(
        energy.partial_cmp(&cap),
        Some(core::cmp::Ordering::Less | core::cmp::Ordering::Equal)
    );
    if !within {
        return deny!(OVER_CAP, "job asks for {energy} J; the cap is {cap} J");
    }
    Verdict::Allow
}

arqon_policy!(inspect);
