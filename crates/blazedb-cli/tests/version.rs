//! `blazedb --version` names the storage format and sync protocol beside the release, which
//! tell builds apart where the release number does not (an upgrade audit, 2026-12-07, F6:
//! three builds of different formats all printed `blazedb 0.1.0`).

mod common;

use blazedb::limits::{FORMAT_VERSION, PROTOCOL_VERSION};
use common::run_blazedb;

#[test]
fn version_names_the_storage_format_and_the_protocol() {
    let run = run_blazedb(None, &["--version"]).success();
    assert_eq!(
        run.stdout.trim(),
        format!(
            "blazedb {} (storage format {FORMAT_VERSION}, protocol {PROTOCOL_VERSION})",
            env!("CARGO_PKG_VERSION")
        )
    );
}
