//! The agent's engram memory (being written).
