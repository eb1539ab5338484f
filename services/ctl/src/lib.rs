//! ghostctl: the operator's command line for ghost-init's control socket (status, start, stop,
//! restart, logs, events, reload, poweroff, reboot), for the agent's socket (agent, tool call,
//! pending, approve, deny, audit verify, memory search, decisions, why, goals, goal, tell) and
//! `import-unit` for systemd units.

pub mod agent_commands;
pub mod agent_render;
pub mod cli;
pub mod client;
pub mod columns;
pub mod commands;
pub mod failure;
pub mod human;
pub mod import_unit;
pub mod render;
pub mod service_toml;
pub mod style;
pub mod sys;
pub mod table;
pub mod unit_file;
pub mod unit_reasons;
pub mod unit_values;
pub mod unit_words;
