//! Test support: emulator (filled in by the issue that needs it).
