//! The gRPC contract of CII Exchange: generated prost messages and, behind the
//! `client` / `server` features, tonic stubs.
//!
//! The `.proto` files under `proto/cii/` are the source of truth and the API
//! reference institutional IT reads. This crate only generates code from them;
//! conversion into validated domain types happens in `cii-types`.
#![expect(missing_docs, reason = "generated code; the docs live in the .proto files")]

macro_rules! package {
    ($file:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $file));
    };
}

/// `cii.*` packages.
pub mod cii {
    pub mod common {
        pub mod v1 {
            package!("cii.common.v1.rs");
        }
    }
    pub mod gateway {
        pub mod v1 {
            package!("cii.gateway.v1.rs");
        }
    }
    pub mod node {
        pub mod v1 {
            package!("cii.node.v1.rs");
        }
    }
    pub mod consent {
        pub mod v1 {
            package!("cii.consent.v1.rs");
        }
    }
    pub mod audit {
        pub mod v1 {
            package!("cii.audit.v1.rs");
        }
    }
    pub mod policy {
        pub mod v1 {
            package!("cii.policy.v1.rs");
        }
    }
    pub mod exchange {
        pub mod v1 {
            package!("cii.exchange.v1.rs");
        }
    }
    pub mod witness {
        pub mod v1 {
            package!("cii.witness.v1.rs");
        }
    }
    pub mod transcryptor {
        pub mod v1 {
            package!("cii.transcryptor.v1.rs");
        }
    }
}

pub use cii::transcryptor::v1 as transcryptor;
pub use cii::witness::v1 as witness;
pub use cii::{audit::v1 as audit, common::v1 as common, consent::v1 as consent};
pub use cii::{exchange::v1 as exchange, gateway::v1 as gateway, node::v1 as node, policy::v1 as policy};

/// The encoded `FileDescriptorSet` of the whole contract, with source info
/// (doc comments). Served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cii_descriptor.bin"));

/// Fully qualified names of the services in the contract.
pub const SERVICE_NAMES: &[&str] = &[
    "cii.gateway.v1.Gateway",
    "cii.gateway.v1.Consents",
    "cii.node.v1.Node",
    "cii.node.v1.NodeInbound",
    "cii.consent.v1.ConsentRegistry",
    "cii.audit.v1.Audit",
    "cii.policy.v1.Policy",
];
