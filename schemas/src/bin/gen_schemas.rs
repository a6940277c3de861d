//! Writes `schemas/json/<topic>.schema.json` for every topic value. Run after changing a type:
//! `cargo run -p pickple-schemas --bin gen-schemas`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    std::fs::create_dir_all(&dir)?;
    for (topic, schema) in pickple_schemas::catalogue::topic_values() {
        let path = dir.join(pickple_schemas::catalogue::schema_file(topic));
        std::fs::write(&path, pickple_schemas::catalogue::schema_text(&schema))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
