//! Test support: bin (filled in by the issue that needs it).
