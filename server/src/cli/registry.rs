//! `tessera plan`, `tessera apply` and `tessera registry history`.

use super::{connect, CliError, ClientArgs};
use std::path::PathBuf;
use tessera_protocol::SpecFile;

/// Reads the spec files named on the command line.
fn read_files(paths: &[PathBuf]) -> Result<Vec<SpecFile>, CliError> {
    if paths.is_empty() {
        return Err("no spec file given".into());
    }
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(SpecFile {
                name: p.display().to_string(),
                text,
            })
        })
        .collect()
}

/// Prints what applying the spec would change, and every problem.
pub fn plan(client: &ClientArgs, paths: &[PathBuf]) -> Result<(), CliError> {
    let files = read_files(paths)?;
    let mut c = connect(client)?;
    let (version, changes, plan) = c.registry_plan(files).map_err(|e| e.to_string())?;
    if changes {
        println!("plan against registry version {version}:\n{plan}");
    } else {
        println!("no changes: the registry (version {version}) matches the spec");
    }
    Ok(())
}

/// Applies the spec atomically against the current registry version.
pub fn apply(client: &ClientArgs, paths: &[PathBuf]) -> Result<(), CliError> {
    let files = read_files(paths)?;
    let mut c = connect(client)?;
    let (version, changes, plan) = c.registry_plan(files.clone()).map_err(|e| e.to_string())?;
    if !changes {
        println!("no changes: the registry (version {version}) matches the spec");
        return Ok(());
    }
    let (new_version, applied) = c
        .registry_apply(version, files)
        .map_err(|e| e.to_string())?;
    let _ = plan;
    println!("applied; the registry is now version {new_version}:\n{applied}");
    Ok(())
}

/// Lists the audit records, newest first.
pub fn registry_history(client: &ClientArgs, limit: u32) -> Result<(), CliError> {
    let mut c = connect(client)?;
    let records = c.registry_history(limit).map_err(|e| e.to_string())?;
    if records.is_empty() {
        println!("no changes recorded");
    }
    for r in records {
        let when = super::values::format_ts(r.time_us);
        println!(
            "version {} at {when} by {}:\n{}",
            r.version, r.identity, r.diff
        );
    }
    Ok(())
}
