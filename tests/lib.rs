//! Support for drsync's end-to-end tests: start the emulator on `127.0.0.1:0`, start Azurite
//! from its npm package, find and run the real `drsync` binary.

pub mod azurite;
pub mod bin;
pub mod emulator;
