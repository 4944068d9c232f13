//! The Switchyard operator and CLI.

#![forbid(unsafe_code)]

pub mod cli;
pub mod identity;
pub mod index;
pub mod local;
pub mod xds;
