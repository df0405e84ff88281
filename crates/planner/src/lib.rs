//! Topology, plans, executor, checkpoints and catalog.
