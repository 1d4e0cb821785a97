//! The ArqonBus wire contract, generated from `proto/arqon/**.proto` at build time.
//!
//! `v1` holds the envelope ([`v1::ArqonMessage`]) and the client/server frames; `nvm::v1` the
//! payloads of the `nvm.*` topics; `policy::v1` what a CASIL policy inspects and the payloads of
//! the `sys.control.policy.*` topics; `operator::v1` what a hosted operator reads and emits and the
//! payloads of `sys.control.operator.*`. Framing helpers that every Rust peer needs live in [`frame`].

#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/arqon.v1.rs"));
}

pub mod nvm {
    #[allow(clippy::doc_lazy_continuation)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/arqon.nvm.v1.rs"));
    }
}

pub mod policy {
    #[allow(clippy::doc_lazy_continuation)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/arqon.policy.v1.rs"));
    }
}

pub mod operator {
    #[allow(clippy::doc_lazy_continuation)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/arqon.operator.v1.rs"));
    }
}

/// Payloads of the example operators' `sim.*` topics.
pub mod sim {
    #[allow(clippy::doc_lazy_continuation)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/arqon.sim.v1.rs"));
    }
}

pub mod circuit {
    #[allow(clippy::doc_lazy_continuation)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/arqon.circuit.v1.rs"));
    }
}

pub mod delta;
pub mod frame;

/// The compiled `FileDescriptorSet` of every file above (with their imports), for reading and
/// writing payloads by type name (e.g. with prost-reflect).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/arqon_descriptor_set.bin"));

/// The protocol version this crate speaks; sent in `Hello.protocol_version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Length of the big-endian frame-length prefix on stream transports (TCP, TLS).
pub const LENGTH_PREFIX_BYTES: usize = 4;
