//! ghost-improve: the crucible. A candidate version of an improvable unit is built, tested and
//! benchmarked against the running version, swapped in only when its tests pass and it is
//! measurably faster, watched through a probation window, and rolled back on its own when it
//! misbehaves. The judge — tests, benchmark, manifest — is always the incumbent's.

pub mod bundle;
pub mod candidate;
pub mod cgroup;
pub mod crucible;
pub mod patch;
pub mod run;
pub mod stats;
pub mod unit;
pub mod workspace;
