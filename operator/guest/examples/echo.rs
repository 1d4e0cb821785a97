//! `echo`: emits, for each input, `copies` pulses (parameter, default 1) on the topic of text
//! parameter `topic` (default `ops.echo.out`), each with the input's payload and spectral
//! metadata whose coherence is the input's sequence. The integration tests use it to see
//! where outputs are sequenced and what they carry.
#![no_std]

use arqonbus_operator_guest::{arqon_operator, emit, param_f64, param_text, Input, Spectral};

fn operate(input: &Input) -> Result<(), u32> {
    let copies = param_f64("copies").unwrap_or(1.0);
    let mut buf = [0u8; 128];
    let topic = param_text("topic", &mut buf).unwrap_or("ops.echo.out");
    let mut i = 0.0;
    while i < copies {
        let spectral = Spectral {
            coherence: input.sequence as f64,
            criticality: i,
            eigenvalues: &[],
        };
        emit(topic, input.payload_type_url, input.payload, Some(spectral)).map_err(|_| 1u32)?;
        i += 1.0;
    }
    Ok(())
}

arqon_operator!(operate);
