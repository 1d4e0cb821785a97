//! `nvm_rig`: a simulated NVM lab rig. Bound to `nvm.job.submit`, it answers every
//! `arqon.nvm.v1.NvmJob` with `steps` streamed `arqon.nvm.v1.NvmJobResult`s on the job's
//! `reply_to` topic (default `nvm.job.result`): progress results (`final = false`), then one final
//! result whose `data` is the rig's "measurement", a damped oscillation at the job's energy,
//! sampled once per step (little-endian doubles). A job that does not decode, or asks for
//! negative energy, gets one final result with `error` set. So a researcher's submit/await loop
//! (US-01) runs with no hardware.
//!
//! Parameters: `steps` (default 4, at most 64).
#![no_std]

use arqonbus_operator_guest::encode::{Sink, Writer};
use arqonbus_operator_guest::pb::{Fields, Value};
use arqonbus_operator_guest::{arqon_operator, emit, param_f64, Input};

const JOB_TYPE: &str = "type.googleapis.com/arqon.nvm.v1.NvmJob";
const RESULT_TYPE: &str = "type.googleapis.com/arqon.nvm.v1.NvmJobResult";
const DEFAULT_REPLY: &str = "nvm.job.result";
const MAX_STEPS: usize = 64;

struct Job<'a> {
    job_id: &'a str,
    energy: f64,
}

fn job<'a>(input: &Input<'a>) -> Result<Job<'a>, &'static str> {
    if input.payload_type_url != JOB_TYPE {
        return Err("the payload is not an arqon.nvm.v1.NvmJob");
    }
    let mut job = Job {
        job_id: "",
        energy: 0.0,
    };
    for field in Fields::new(input.payload) {
        match field.map_err(|_| "the NvmJob does not decode")? {
            f if f.number == 1 => {
                if let Value::Bytes(b) = f.value {
                    job.job_id = core::str::from_utf8(b).map_err(|_| "job_id is not UTF-8")?;
                }
            }
            f if f.number == 3 => {
                if let Value::Fixed64(bits) = f.value {
                    job.energy = f64::from_bits(bits);
                }
            }
            _ => {}
        }
    }
    if !(job.energy >= 0.0) {
        return Err("energy_joules must be a non-negative number");
    }
    Ok(job)
}

fn result(s: &mut dyn Sink, job_id: &str, last: bool, progress: f64, data: &[u8], error: &str) {
    s.string(1, job_id);
    s.varint(2, last as u64);
    s.double(3, progress);
    s.bytes(4, data);
    s.string(5, error);
}

fn send(
    topic: &str,
    job_id: &str,
    last: bool,
    progress: f64,
    data: &[u8],
    error: &str,
) -> Result<(), u32> {
    let mut buf = [0u8; 1024];
    let mut w = Writer::new(&mut buf);
    result(&mut w, job_id, last, progress, data, error);
    let len = w.len().ok_or(2u32)?;
    emit(topic, RESULT_TYPE, &buf[..len], None).map_err(|_| 2)
}

fn operate(input: &Input) -> Result<(), u32> {
    let topic = if input.reply_to.is_empty() {
        DEFAULT_REPLY
    } else {
        input.reply_to
    };
    let steps = (param_f64("steps").unwrap_or(4.0).max(1.0) as usize).min(MAX_STEPS);
    let job = match job(input) {
        Ok(job) => job,
        Err(why) => return send(topic, "", true, 1.0, &[], why),
    };
    for i in 1..steps {
        send(topic, job.job_id, false, i as f64 / steps as f64, &[], "")?;
    }
    let mut data = [0u8; 8 * MAX_STEPS];
    for i in 0..steps {
        let t = i as f64;
        let sample = libm::exp(-t / 4.0) * libm::cos(t * job.energy);
        data[8 * i..8 * i + 8].copy_from_slice(&sample.to_le_bytes());
    }
    send(topic, job.job_id, true, 1.0, &data[..8 * steps], "")
}

arqon_operator!(operate);
