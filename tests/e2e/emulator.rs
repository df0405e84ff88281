//! End-to-end: emulator.
