//! End-to-end tests, one module per area. Everything here runs over real sockets: the
//! emulator on loopback, Azurite, and the real `drsync` binary.

mod arm_client;
mod azurite_blob;
mod config_errors;
mod drills;
mod emulator;
mod sync;
