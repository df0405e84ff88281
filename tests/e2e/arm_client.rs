//! End-to-end: arm_client.
