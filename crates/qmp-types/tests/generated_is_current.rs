//! The checked-in generated code is what the generator makes of the
//! checked-in dumps (so `qmp codegen` and the crate agree), and so are the
//! single-version fixtures of the tolerance tests. To refresh after a
//! generator change: `QMP_REGENERATE=1 cargo test -p qmp-types --test generated_is_current`.

use std::path::Path;

fn dump(label: &str) -> (String, serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/{label}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    (label.to_owned(), serde_json::from_str(&text).unwrap())
}

/// Queries and every event: what the tolerance tests exercise.
fn tolerance_subset(name: &str) -> bool {
    name.starts_with("query-")
        || name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
}

fn check(path: &str, source: String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("QMP_REGENERATE").is_some() {
        std::fs::write(&path, &source).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == source,
        "{} is not what the generator makes of the dumps: run QMP_REGENERATE=1 cargo test -p qmp-types --test generated_is_current",
        path.display()
    );
}

#[test]
fn the_crate_and_the_fixtures_are_what_the_generator_makes_of_the_dumps() {
    let all: Vec<_> = qmp_types::DUMPS.iter().map(|l| dump(l)).collect();
    check("src/generated.rs", qmp_codegen::generate(&all).unwrap());
    check(
        "tests/fixtures/from_7_2.rs",
        qmp_codegen::generate_only(&[dump("7.2-system")], tolerance_subset).unwrap(),
    );
    check(
        "tests/fixtures/from_11_1.rs",
        qmp_codegen::generate_only(&[dump("11.1-system")], tolerance_subset).unwrap(),
    );
    // The guest agent's commands, from the project's own description of
    // them (qemu-ga has no introspection; tests/guest_agent.rs checks the
    // description against the real agents).
    check(
        "src/guest_agent.rs",
        qmp_codegen::generate(&[dump("guest-agent")]).unwrap(),
    );
}
