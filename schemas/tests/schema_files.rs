//! The committed JSON Schemas are the contract other tools read; they must match the Rust types.

use std::path::Path;

use pickple_schemas::catalogue::{schema_file, schema_text, topic_values};
use pickple_schemas::{decode, DecodeError, OrderCommand};

#[test]
fn committed_schema_files_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    let mut drifted = Vec::new();
    for (topic, schema) in topic_values() {
        let path = dir.join(schema_file(topic));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != schema_text(&schema) {
            drifted.push(topic);
        }
    }
    assert!(
        drifted.is_empty(),
        "schema files drifted from the types for {drifted:?}; run `cargo run -p pickple-schemas --bin gen-schemas`"
    );
}

#[test]
fn every_schema_file_belongs_to_a_topic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    let known: Vec<String> = topic_values().iter().map(|(t, _)| schema_file(t)).collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(known.contains(&name), "stale schema file {name}");
    }
}

#[test]
fn malformed_json_is_a_syntax_error() {
    let err = decode::<OrderCommand>(Some(b"{\"type\": \"PlaceOrder\", ")).unwrap_err();
    assert!(matches!(err, DecodeError::Syntax(_)), "{err:?}");
}

#[test]
fn wrong_shape_names_the_type_and_the_field() {
    let err =
        decode::<OrderCommand>(Some(br#"{"type":"PlaceOrder","order_id":"o1"}"#)).unwrap_err();
    match err {
        DecodeError::Shape { type_name, message } => {
            assert_eq!(type_name, "OrderCommand");
            assert!(message.contains("username"), "{message}");
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    assert!(matches!(
        decode::<OrderCommand>(None),
        Err(DecodeError::Missing)
    ));
}

#[test]
fn a_command_round_trips_as_readable_json() {
    let cmd = OrderCommand::CancelOrder {
        order_id: "o1".into(),
        username: "alice".into(),
        reason: "changed my mind".into(),
        master: false,
    };
    let bytes = pickple_schemas::encode(&cmd);
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.contains(r#""type":"CancelOrder""#), "{text}");
    assert_eq!(decode::<OrderCommand>(Some(&bytes)).unwrap(), cmd);
}
