//! Running the outside tools (objcopy, mkfs.fat, mcopy, mke2fs) with errors that name the
//! tool, its arguments and what it printed.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run `{tool}` ({source}); is it installed? (Debian package: {package})")]
    Spawn {
        tool: String,
        package: &'static str,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
}

/// Runs `cmd` to completion; a non-zero exit is an error carrying its output.
/// `package` is where the tool comes from, for the message when it is missing.
pub fn run(cmd: &mut Command, package: &'static str) -> Result<(), ToolError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|source| ToolError::Spawn {
        tool,
        package,
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if output.is_empty() {
        output = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(ToolError::Failed {
        command,
        status: out.status,
        output,
    })
}
