//! Stream framing shared by every Rust peer: a 4-byte big-endian length, then one protobuf frame.
//!
//! The decoder never reserves room for a frame's declared length, and a declared length over the
//! limit is reported before any of the body is read, so a hostile peer cannot make us allocate
//! more than it sends.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::LENGTH_PREFIX_BYTES;

/// What went wrong while splitting a byte stream into frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix declares more than the configured maximum.
    TooLarge { declared: usize, max: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { declared, max } => {
                write!(f, "frame of {declared} bytes exceeds max_frame_bytes {max}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Takes the next complete frame body out of `buf`, if one is there.
///
/// Returns `Ok(None)` when more bytes are needed; `Err` as soon as a length prefix over `max`
/// is seen, without waiting for its body. Nothing is reserved for the body: the caller's buffer
/// grows as its bytes arrive, so a peer that declares a large frame and stalls holds only what
/// it sent.
pub fn take_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < LENGTH_PREFIX_BYTES {
        return Ok(None);
    }
    let declared = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if declared > max {
        return Err(FrameError::TooLarge { declared, max });
    }
    if buf.len() < LENGTH_PREFIX_BYTES + declared {
        return Ok(None);
    }
    buf.advance(LENGTH_PREFIX_BYTES);
    Ok(Some(buf.split_to(declared).freeze()))
}

/// Appends `msg` to `out` as one length-prefixed frame.
pub fn put_frame<M: Message>(out: &mut BytesMut, msg: &M) {
    let len = msg.encoded_len();
    out.reserve(LENGTH_PREFIX_BYTES + len);
    out.put_u32(len as u32);
    // Encoding into a buffer with enough capacity reserved cannot fail.
    msg.encode(out).expect("reserved capacity for the frame");
}

/// Encodes `msg` as one length-prefixed frame.
pub fn encode_frame<M: Message>(msg: &M) -> Bytes {
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX_BYTES + msg.encoded_len());
    put_frame(&mut out, msg);
    out.freeze()
}

/// Field number of `ServerFrame.deliver`.
const SERVER_FRAME_DELIVER_FIELD: u32 = 3;
/// Field numbers inside `Deliver`.
const DELIVER_SUBSCRIPTION_ID_FIELD: u32 = 1;
const DELIVER_MESSAGE_FIELD: u32 = 2;
/// Protobuf wire types.
const WIRE_VARINT: u32 = 0;
const WIRE_LEN: u32 = 2;

/// The most bytes [`put_deliver_header`] writes: prefix plus three tags and three varints.
pub const MAX_DELIVER_HEADER_BYTES: usize = LENGTH_PREFIX_BYTES + 3 + 10 + 10 + 10;

/// Sizes of a Deliver frame around an envelope of `message_len` bytes: (the `Deliver` message's
/// length, the frame body's length).
fn deliver_lens(subscription_id: u64, message_len: usize) -> (usize, usize) {
    use prost::encoding::encoded_len_varint;
    let sub_len = if subscription_id == 0 {
        0
    } else {
        1 + encoded_len_varint(subscription_id)
    };
    let deliver_len = sub_len + 1 + encoded_len_varint(message_len as u64) + message_len;
    let body_len = 1 + encoded_len_varint(deliver_len as u64) + deliver_len;
    (deliver_len, body_len)
}

/// Writes the length prefix and protobuf header of a `ServerFrame { deliver: Deliver {
/// subscription_id, message } }` whose `message` is the already-encoded envelope
/// `message_len` bytes long, so the caller can send the header and the shared envelope bytes
/// back to back. The result is byte-for-byte what prost would encode for the whole frame
/// (correlation_id is zero and so omitted).
pub fn put_deliver_header(out: &mut impl BufMut, subscription_id: u64, message_len: usize) {
    use prost::encoding::encode_varint;
    let (deliver_len, body_len) = deliver_lens(subscription_id, message_len);
    out.put_u32(body_len as u32);
    encode_varint(u64::from(tag(SERVER_FRAME_DELIVER_FIELD, WIRE_LEN)), out);
    encode_varint(deliver_len as u64, out);
    if subscription_id != 0 {
        encode_varint(
            u64::from(tag(DELIVER_SUBSCRIPTION_ID_FIELD, WIRE_VARINT)),
            out,
        );
        encode_varint(subscription_id, out);
    }
    encode_varint(u64::from(tag(DELIVER_MESSAGE_FIELD, WIRE_LEN)), out);
    encode_varint(message_len as u64, out);
}

/// The total size (prefix included) of a Deliver frame built by [`put_deliver_header`].
pub fn deliver_frame_len(subscription_id: u64, message_len: usize) -> usize {
    LENGTH_PREFIX_BYTES + deliver_lens(subscription_id, message_len).1
}

const fn tag(field: u32, wire_type: u32) -> u32 {
    (field << 3) | wire_type
}

/// Field numbers for history chunks.
const SERVER_FRAME_CORRELATION_FIELD: u32 = 1;
const SERVER_FRAME_HISTORY_CHUNK_FIELD: u32 = 6;
const HISTORY_CHUNK_MESSAGES_FIELD: u32 = 1;
/// `ArqonMessage.topic`.
const ENVELOPE_TOPIC_FIELD: u32 = 3;

/// Appends a `ServerFrame { correlation_id, history_chunk: HistoryChunk { messages } }` whose
/// messages are already-encoded envelopes, without decoding them. Byte-for-byte what prost
/// would encode.
pub fn put_history_chunk(out: &mut BytesMut, correlation_id: u64, envelopes: &[&[u8]]) {
    use prost::encoding::{encode_varint, encoded_len_varint};
    let messages_len: usize = envelopes
        .iter()
        .map(|e| 1 + encoded_len_varint(e.len() as u64) + e.len())
        .sum();
    let corr_len = if correlation_id == 0 {
        0
    } else {
        1 + encoded_len_varint(correlation_id)
    };
    let body_len = corr_len + 1 + encoded_len_varint(messages_len as u64) + messages_len;
    out.reserve(LENGTH_PREFIX_BYTES + body_len);
    out.put_u32(body_len as u32);
    if correlation_id != 0 {
        encode_varint(
            u64::from(tag(SERVER_FRAME_CORRELATION_FIELD, WIRE_VARINT)),
            out,
        );
        encode_varint(correlation_id, out);
    }
    encode_varint(
        u64::from(tag(SERVER_FRAME_HISTORY_CHUNK_FIELD, WIRE_LEN)),
        out,
    );
    encode_varint(messages_len as u64, out);
    for e in envelopes {
        encode_varint(u64::from(tag(HISTORY_CHUNK_MESSAGES_FIELD, WIRE_LEN)), out);
        encode_varint(e.len() as u64, out);
        out.extend_from_slice(e);
    }
}

/// The topic of an encoded `ArqonMessage`, read without decoding the rest.
pub fn envelope_topic(mut envelope: &[u8]) -> Option<&str> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    while !envelope.is_empty() {
        let (field, wire) = decode_key(&mut envelope).ok()?;
        match wire {
            WireType::Varint => {
                decode_varint(&mut envelope).ok()?;
            }
            WireType::SixtyFourBit => envelope = envelope.get(8..)?,
            WireType::ThirtyTwoBit => envelope = envelope.get(4..)?,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut envelope).ok()? as usize;
                let value = envelope.get(..len)?;
                if field == ENVELOPE_TOPIC_FIELD {
                    return std::str::from_utf8(value).ok();
                }
                envelope = &envelope[len..];
            }
            WireType::StartGroup | WireType::EndGroup => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{server_frame, ArqonMessage, Deliver, ServerFrame};

    fn prost_deliver(subscription_id: u64, message: ArqonMessage) -> Bytes {
        encode_frame(&ServerFrame {
            correlation_id: 0,
            kind: Some(server_frame::Kind::Deliver(Deliver {
                subscription_id,
                message: Some(message),
            })),
        })
    }

    #[test]
    fn deliver_header_matches_prost_encoding() {
        for sub in [0u64, 1, 127, 128, 300, u64::MAX] {
            for body in [0usize, 1, 100, 127, 128, 1000, 20_000] {
                let message = ArqonMessage {
                    topic: "a.b".into(),
                    producer_id: "x".repeat(body),
                    ..Default::default()
                };
                let encoded = message.encode_to_vec();
                let mut manual = BytesMut::new();
                put_deliver_header(&mut manual, sub, encoded.len());
                manual.extend_from_slice(&encoded);
                let whole = prost_deliver(sub, message);
                assert_eq!(manual.freeze(), whole, "sub {sub} body {body}");
                assert_eq!(deliver_frame_len(sub, encoded.len()), whole.len());
            }
        }
    }

    #[test]
    fn history_chunk_matches_prost_encoding() {
        use crate::v1::HistoryChunk;
        let messages: Vec<ArqonMessage> = (0..5)
            .map(|i| ArqonMessage {
                topic: format!("a.b{i}"),
                sequence: i,
                producer_id: "p".repeat(i as usize * 50),
                ..Default::default()
            })
            .collect();
        let encoded: Vec<Vec<u8>> = messages.iter().map(|m| m.encode_to_vec()).collect();
        let refs: Vec<&[u8]> = encoded.iter().map(|e| &e[..]).collect();
        for corr in [0u64, 7, 300] {
            let mut manual = BytesMut::new();
            put_history_chunk(&mut manual, corr, &refs);
            let whole = encode_frame(&ServerFrame {
                correlation_id: corr,
                kind: Some(server_frame::Kind::HistoryChunk(HistoryChunk {
                    messages: messages.clone(),
                })),
            });
            assert_eq!(manual.freeze(), whole);
        }
    }

    #[test]
    fn envelope_topic_is_found_among_other_fields() {
        let mut m = ArqonMessage {
            id: "x".into(),
            sequence: 9,
            topic: "lab.rig.temp".into(),
            timestamp_unix_nanos: 5,
            ..Default::default()
        };
        m.causal.insert("r".into(), 3);
        assert_eq!(envelope_topic(&m.encode_to_vec()), Some("lab.rig.temp"));
        assert_eq!(envelope_topic(&[0xff, 0xff]), None);
    }

    #[test]
    fn take_frame_waits_for_whole_frame_and_rejects_oversize_prefix() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&5u32.to_be_bytes());
        buf.extend_from_slice(b"abc");
        assert_eq!(take_frame(&mut buf, 10), Ok(None));
        buf.extend_from_slice(b"de");
        assert_eq!(
            take_frame(&mut buf, 10),
            Ok(Some(Bytes::from_static(b"abcde")))
        );
        assert!(buf.is_empty());

        buf.extend_from_slice(&11u32.to_be_bytes());
        assert_eq!(
            take_frame(&mut buf, 10),
            Err(FrameError::TooLarge {
                declared: 11,
                max: 10
            })
        );
    }
}
