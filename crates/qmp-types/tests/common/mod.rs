//! What the typed-layer tests share: which queries a QEMU can run without
//! arguments, and the decode-and-encode-again check.

// Each test binary that includes this uses only part of it.
#![allow(dead_code)]

use qmp_client::Client;
use qmp_proto::schema::{Kind, Schema};
use qmp_proto::typed::TypeError;
use serde_json::Value;

/// `reply_round_trip` or `event_round_trip` of a set of generated types.
pub type RoundTrip = fn(&str, Value) -> Option<Result<Value, TypeError>>;

/// The `query-*` and `x-query-*` commands of the connected QEMU that take
/// no required arguments, by its own schema, in its order.
pub async fn no_argument_queries(client: &Client) -> Vec<String> {
    let reply = client
        .execute("query-qmp-schema", Value::Null)
        .await
        .unwrap();
    let schema = Schema::from_json(&reply).unwrap();
    schema
        .command_names()
        .filter(|name| name.starts_with("query-") || name.starts_with("x-query-"))
        .filter(|name| match schema.arguments_of(name).map(|e| &e.kind) {
            Some(Kind::Object { members, .. }) => members.iter().all(|m| m.optional),
            _ => true,
        })
        .map(str::to_owned)
        .collect()
}

/// Decodes `value` (the reply to, or the data of, `name`) by the types of
/// `round_trip` and encodes it again: it must decode and come back as the
/// same JSON (member order aside), or this panics, naming `what`. False
/// when those types have no `name`.
pub fn round_trips(round_trip: RoundTrip, name: &str, value: &Value, what: &str) -> bool {
    let Some(again) = round_trip(name, value.clone()) else {
        return false;
    };
    let again = again.unwrap_or_else(|e| panic!("{what}: {name}: {e}"));
    assert_eq!(&again, value, "{what}: {name} does not round-trip");
    true
}
