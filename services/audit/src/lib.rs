//! Identity, tools, policy and audit (being written).
