//! The generated stubs (src/gen, from proto/ by `make generate`), one Rust module per proto package so that
//! prost's relative paths (`super::super::falconet::v1::Cursor`) resolve.

#![allow(clippy::all, missing_docs)]

/// Falco's own packages, wire-compatible with Falco's gRPC API.
pub mod falco {
    pub mod schema {
        include!("gen/falco.schema.rs");
    }
    pub mod outputs {
        include!("gen/falco.outputs.rs");
    }
    pub mod version {
        include!("gen/falco.version.rs");
    }
}

/// Falconet's own package: the batched stream, get-all and the inputs service.
pub mod falconet {
    pub mod v1 {
        include!("gen/falconet.v1.rs");
    }
}
