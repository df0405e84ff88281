//! Test support: azurite (filled in by the issue that needs it).
