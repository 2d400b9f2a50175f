//! `mesh_resources::parse` on arbitrary text: it must never panic; a stream
//! it accepts must serialize (YAML stream and JSON) and parse back to the
//! same resources; a stream it refuses must explain itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match mesh_resources::parse(text) {
        Ok(resources) => {
            let yaml =
                mesh_resources::to_yaml_stream(&resources).expect("accepted resources serialize");
            let again = mesh_resources::parse_yaml(&yaml).expect("our own YAML parses");
            assert_eq!(again, resources, "YAML round trip");
            for r in &resources {
                let json = r.to_json().expect("accepted resource serializes to JSON");
                let back = mesh_resources::parse_json(&json).expect("our own JSON parses");
                assert_eq!(back.as_slice(), std::slice::from_ref(r), "JSON round trip");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty(), "an error explains itself"),
    }
});
