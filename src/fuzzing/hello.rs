//! `Hello` and its operator manifest (`sam/`): what a client sends before anything else.

use arqonbus_proto::v1::Hello;
use prost::Message;

use crate::sam::Manifest;

/// The input is `len u16 LE | an encoded Hello of len bytes | a payload`: the payload is what
/// the operator then publishes, checked against the manifest (in strict mode, decoded as the
/// declared type).
pub fn hello(data: &[u8]) {
    let [lo, hi, rest @ ..] = data else {
        return;
    };
    let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
    let (hello, payload) = rest.split_at(len);
    if let Ok(h) = Hello::decode(hello) {
        check(&h, payload);
    }
}

/// What `session/hello.rs` does with a Hello's outside bytes before it asks the shard anything:
/// validates the manifest, and then the checks an accepted manifest runs on every publish.
pub(super) fn check(h: &Hello, payload: &[u8]) {
    let Some(m) = &h.manifest else {
        return;
    };
    let Ok(manifest) = Manifest::validate(m) else {
        return;
    };
    // A manifest that validated holds only what validation allows.
    assert!(!manifest.name.is_empty() && manifest.name.len() <= 64);
    assert_eq!(manifest.is_strict(), !m.descriptor_set.is_empty());
    let _ = manifest.describe();
    // Each declared type on a topic its pattern covers, so strict mode decodes outside bytes
    // against the uploaded descriptors.
    let payloads: [&[u8]; 3] = [&[], payload, &m.descriptor_set];
    for schema in manifest.outputs.iter().chain(&manifest.inputs) {
        let topic = schema.pattern_text.replace(['*', '>'], "x");
        for payload in payloads {
            let _ = manifest.check_output(&topic, &schema.type_url, payload);
        }
        let _ = manifest.takes_input(&topic, &schema.type_url);
    }
}
