//! `kuramoto`: a Kuramoto coupled-oscillator simulator, one Euler step per input.
//!
//! Each pulse it is bound to (e.g. `sim.kuramoto.tick`) advances `oscillators` phase oscillators
//! by `dt`: dθᵢ/dt = ωᵢ + (k_c / N) Σⱼ sin(θⱼ − θᵢ). It then emits `sim.kuramoto.state` with an
//! `arqon.sim.v1.KuramotoState` payload and the order parameter r = |⟨e^{iθ}⟩| in
//! `spectral.coherence` (and |Δr| in `spectral.criticality`). Below the critical coupling the
//! oscillators stay incoherent (r small); above it they lock (r → 1).
//!
//! Parameters: `k_c` (coupling, default 1.0), `dt` (0.05), `oscillators` (16, at most 256),
//! `seed` (1): natural frequencies ωᵢ and initial phases come from a xorshift generator seeded
//! with it, so every replay starts from the same state. The state is this instance's memory:
//! one simulation per reality. Changing `oscillators` or `seed` restarts the simulation.
//!
//! Failure codes: 1 = a parameter out of range.
#![no_std]

use arqonbus_operator_guest::encode::{Sink, Writer};
use arqonbus_operator_guest::{arqon_operator, emit, param_f64, Input, Spectral};
use core::cell::UnsafeCell;
use core::f64::consts::PI;

const MAX_OSCILLATORS: usize = 256;
const STATE_TYPE: &str = "type.googleapis.com/arqon.sim.v1.KuramotoState";
const OUT_TOPIC: &str = "sim.kuramoto.state";
const BAD_PARAM: u32 = 1;

struct Sim {
    n: usize,
    seed: u64,
    step: u64,
    last_r: f64,
    theta: [f64; MAX_OSCILLATORS],
    omega: [f64; MAX_OSCILLATORS],
}

struct Cell(UnsafeCell<Sim>);
// SAFETY: a Wasm instance is single-threaded and never re-entered.
unsafe impl Sync for Cell {}

static SIM: Cell = Cell(UnsafeCell::new(Sim {
    n: 0,
    seed: 0,
    step: 0,
    last_r: 0.0,
    theta: [0.0; MAX_OSCILLATORS],
    omega: [0.0; MAX_OSCILLATORS],
}));

/// xorshift64*: deterministic, no imports.
fn next(state: &mut u64) -> f64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let x = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Sim {
    fn reset(&mut self, n: usize, seed: u64) {
        let mut rng = seed.max(1);
        self.n = n;
        self.seed = seed;
        self.step = 0;
        self.last_r = 0.0;
        for i in 0..n {
            self.theta[i] = 2.0 * PI * next(&mut rng);
            // Natural frequencies spread around 1 rad/s (uniform in [0.5, 1.5)).
            self.omega[i] = 0.5 + next(&mut rng);
        }
    }

    /// One Euler step; returns (r, mean phase).
    fn advance(&mut self, k: f64, dt: f64) -> (f64, f64) {
        let n = self.n;
        let mut d = [0.0f64; MAX_OSCILLATORS];
        for i in 0..n {
            let mut coupling = 0.0;
            for j in 0..n {
                coupling += libm::sin(self.theta[j] - self.theta[i]);
            }
            d[i] = self.omega[i] + k / n as f64 * coupling;
        }
        let (mut re, mut im) = (0.0, 0.0);
        for i in 0..n {
            let t = libm::fmod(self.theta[i] + dt * d[i], 2.0 * PI);
            self.theta[i] = if t < 0.0 { t + 2.0 * PI } else { t };
            re += libm::cos(self.theta[i]);
            im += libm::sin(self.theta[i]);
        }
        self.step += 1;
        let (re, im) = (re / n as f64, im / n as f64);
        (libm::sqrt(re * re + im * im), libm::atan2(im, re))
    }
}

fn state_payload(s: &mut dyn Sink, step: u64, r: f64, phase: f64, k: f64, n: usize) {
    s.varint(1, step);
    s.double(2, r);
    s.double(3, phase);
    s.double(4, k);
    s.varint(5, n as u64);
}

fn operate(_input: &Input) -> Result<(), u32> {
    let k = param_f64("k_c").unwrap_or(1.0);
    let dt = param_f64("dt").unwrap_or(0.05);
    let n = param_f64("oscillators").unwrap_or(16.0);
    let seed = param_f64("seed").unwrap_or(1.0);
    if !(k.is_finite() && dt > 0.0 && dt <= 1.0 && n >= 1.0 && n <= MAX_OSCILLATORS as f64) {
        return Err(BAD_PARAM);
    }
    let (n, seed) = (n as usize, seed as u64);
    // SAFETY: single-threaded and not re-entered.
    let sim = unsafe { &mut *SIM.0.get() };
    if sim.n != n || sim.seed != seed {
        sim.reset(n, seed);
    }
    let (r, phase) = sim.advance(k, dt);
    let criticality = libm::fabs(r - sim.last_r);
    sim.last_r = r;
    let mut payload = [0u8; 64];
    let mut w = Writer::new(&mut payload);
    state_payload(&mut w, sim.step, r, phase, k, n);
    let len = w.len().ok_or(BAD_PARAM)?;
    let spectral = Spectral {
        coherence: r,
        criticality,
        eigenvalues: &[],
    };
    emit(OUT_TOPIC, STATE_TYPE, &payload[..len], Some(spectral)).map_err(|_| BAD_PARAM)
}

arqon_operator!(operate);
