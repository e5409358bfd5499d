//! Typed QMP from QEMU's own description of itself.
//!
//! [`generate`] reads `query-qmp-schema` dumps (of several QEMU versions
//! and binaries), merges them ([`model`]) and writes Rust source for the
//! `qmp-types` runtime: a struct per command's arguments (implementing
//! `Command`), per event's data (implementing `Event`), and the types
//! inside them, named by the rule in [`emit`].

pub mod emit;
pub mod model;

pub use model::Model;

/// Generates the source for `dumps`, each `(label, query-qmp-schema
/// reply)`.
pub fn generate(
    dumps: &[(String, serde_json::Value)],
) -> Result<String, qmp_proto::schema::SchemaError> {
    generate_only(dumps, |_| true)
}

/// Like [`generate`], for the commands and events whose names pass `keep`.
pub fn generate_only(
    dumps: &[(String, serde_json::Value)],
    keep: impl Fn(&str) -> bool,
) -> Result<String, qmp_proto::schema::SchemaError> {
    let schemas = dumps
        .iter()
        .map(|(label, json)| Ok((label.clone(), qmp_proto::schema::Schema::from_json(json)?)))
        .collect::<Result<Vec<_>, qmp_proto::schema::SchemaError>>()?;
    let mut model = Model::merge(&schemas);
    model.commands.retain(|c| keep(&c.name));
    model.events.retain(|e| keep(&e.name));
    Ok(emit::generate(&model))
}
