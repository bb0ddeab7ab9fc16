//! Extism plug-ins behind `warden serve`: published and installed over the admin API (checked,
//! compiled and linked before anything is stored), called through the runner API
//! (`POST /v1/execute`), a refused `http_request` answered as an extension fault and audited,
//! and the next call served.

use super::*;

fn plug_in(from: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(from);
    assert!(
        d.join("extension.wasm").exists(),
        "run scripts/build-examples.sh first"
    );
    d
}

#[test]
fn the_runner_api_calls_an_extism_plug_in() {
    let st = setup();
    let s = st.serve("");
    let (example, sig) = st.bundle(&plug_in("examples/extism/count-vowels"), "count-vowels");
    let example_hash = publish(&s, &example, &sig);
    let (hostile, sig) = st.bundle(&plug_in("tests/guests/extism-hostile"), "extism-hostile");
    let hostile_hash = publish(&s, &hostile, &sig);
    tenant(&s, "alpha");
    assert_eq!(
        install(&s, "alpha", "warden.count-vowels", &example_hash, "none").status,
        200
    );
    assert_eq!(
        install(&s, "alpha", "warden.extism-hostile", &hostile_hash, "all").status,
        200
    );
    let url = format!("{}/v1/execute", s.base);
    let count = br#"{"tenant":"alpha","extension":"warden.count-vowels","method":"count_vowels","input":"Hello, World! yes"}"#;
    let r = send("POST", &url, Some(RUNNER), count);
    assert_eq!(r.status, 200, "{}", r.body);
    // The input is the JSON text, quotes included; `vowels` is not granted: the default set.
    assert_eq!(
        r.json()["output"],
        serde_json::json!({"count": 4, "total": 4, "vowels": "aeiouAEIOU", "input_len": 19})
    );

    let fetch = br#"{"tenant":"alpha","extension":"warden.extism-hostile","method":"fetch","input":"http://evil.test/"}"#;
    let r = send("POST", &url, Some(RUNNER), fetch);
    assert_eq!(r.status, 502, "{}", r.body);
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("http_request to http://evil.test:80 was refused"),
        "{message}"
    );
    let id = r.json()["error"]["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let records = record_for(&audit(&st), &id);
    assert!(
        records.iter().any(|r| r["event"] == "denial"
            && r["capability"] == "network"
            && r["target"] == "http://evil.test:80"),
        "{records:#?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "call" && r["outcome"] == "trap"),
        "{records:#?}"
    );

    // The next call is served.
    let r = send("POST", &url, Some(RUNNER), count);
    assert_eq!(r.status, 200, "{}", r.body);
}
