//! Tidy checks that keep the architecture honest: forbidden dependency
//! edges, crate and file docs, no printing from libraries. They read the
//! workspace as it is (`cargo metadata`, `cargo tree`, the source files), so
//! an invariant broken by a change fails `cargo test`.

mod access;
mod alerts;
mod code;
mod codes;
mod deps;
mod files;
mod legal_review;
mod source;
