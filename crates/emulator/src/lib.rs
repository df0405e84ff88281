//! A local Azure for drsync.
