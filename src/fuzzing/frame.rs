//! The bytes a session reads: a stream cut into length-prefixed frames, each decoded as a
//! `ClientFrame`, and the parts of a frame the session parses before it reaches the shard
//! (subscription patterns and spectral filters).

use arqonbus_proto::frame::{take_frame, FrameError};
use arqonbus_proto::v1::{client_frame, ClientFrame};
use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::config::Limits;
use crate::filter::{Filter, FilterLimits};
use crate::routing::Pattern;

/// The first byte picks the frame limit and how the stream arrives (in pieces of 1 to 8
/// bytes, so every split of a length prefix is tried); the rest is the stream.
pub fn frame(data: &[u8]) {
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    // Small limits, so the fuzzer reaches "too large" with short inputs; 0 means no frame
    // may carry a body at all.
    let max = usize::from(knob >> 3) * 64;
    let step = usize::from(knob & 7) + 1;
    let mut buf = BytesMut::new();
    let mut fed = 0;
    loop {
        match take_frame(&mut buf, max) {
            Ok(Some(body)) => {
                assert!(body.len() <= max, "a frame over the limit was accepted");
                client_frame(body);
            }
            Ok(None) if fed == stream.len() => break,
            Ok(None) => {
                let end = (fed + step).min(stream.len());
                buf.extend_from_slice(&stream[fed..end]);
                fed = end;
            }
            Err(FrameError::TooLarge { declared, max: m }) => {
                assert!(declared > m, "a frame within the limit was refused");
                break;
            }
        }
    }
}

/// One frame body, as the session's read loop decodes it.
fn client_frame(body: Bytes) {
    let Ok(frame) = ClientFrame::decode(body.clone()) else {
        return;
    };
    // Maps encode in key order (proto/build.rs), so what was decoded encodes to one exact byte
    // string, and decoding that again must give it back: a lossy field would show here.
    let encoded = frame.encode_to_vec();
    match ClientFrame::decode(&encoded[..]) {
        Ok(again) => assert_eq!(
            again.encode_to_vec(),
            encoded,
            "re-encoding changed the frame"
        ),
        Err(e) => panic!("a frame prost encoded does not decode: {e}"),
    }
    match frame.kind {
        Some(client_frame::Kind::Subscribe(s)) => {
            let limits = FilterLimits::from_config(&Limits::default());
            if let Ok(pattern) = Pattern::parse(&s.pattern) {
                let _ = pattern.matches(&s.reality_id);
            }
            // The filter is evaluated on the frame's own bytes: an envelope the evaluator
            // cannot walk must be refused, never read out of bounds.
            if let Ok(Some(filter)) = Filter::optional(&s.filter, &limits) {
                let _ = filter.matches_envelope(&body);
            }
        }
        Some(client_frame::Kind::Hello(h)) => super::hello::check(&h, &[]),
        _ => {}
    }
}
