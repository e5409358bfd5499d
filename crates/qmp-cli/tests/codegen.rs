//! `qmp codegen` writes what the qmp-types crate holds, from the same dumps.

use std::process::Command;

#[test]
fn qmp_codegen_writes_the_crates_types_from_the_same_dumps() {
    let types = concat!(env!("CARGO_MANIFEST_DIR"), "/../qmp-types");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("types.rs");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qmp"));
    cmd.arg("codegen").arg("-o").arg(&out);
    for label in qmp_types::DUMPS {
        cmd.arg("--schema")
            .arg(format!("{types}/schemas/{label}.json"));
    }
    let status = cmd.status().unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&out).unwrap();
    let crate_source = std::fs::read_to_string(format!("{types}/src/generated.rs")).unwrap();
    assert!(written == crate_source, "qmp codegen and the crate differ");

    // Not a dump: a clear error, exit status 2.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["codegen", "-o"])
        .arg(dir.path().join("x.rs"))
        .arg("--schema")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a query-qmp-schema dump"));
}
