//! The Switchyard operator and CLI.

#![forbid(unsafe_code)]
