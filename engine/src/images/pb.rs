//! The image messages, generated from `proto/*.proto` (package `criu`) by
//! `build/proto.rs`. Names follow prost: `core_entry` -> [`CoreEntry`],
//! nested enums in snake-case modules (`core_entry::March`).
//!
//! The schema is wire-compatible with CRIU's published one (same field
//! numbers and types); ckpt's own additions use field numbers >= 1000,
//! which CRIU and crit skip as unknown fields.

#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
#![allow(non_camel_case_types)]

include!(concat!(env!("OUT_DIR"), "/criu.rs"));
