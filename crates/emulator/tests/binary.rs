//! The `drsync-emulator` binary: flags, seed-state and fault-profile files, loopback only.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const SUB: &str = "11111111-2222-3333-4444-555555555555";

/// Kills the child (by its own handle) when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_drsync-emulator"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a first line");
    let running = Running(child);
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (running, url.to_owned())
}

/// GETs a control URL and returns its JSON body.
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn binary_serves_seeded_state_with_faults_and_time_scale() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        json!({"services": [{"subscription": SUB, "resource_group": "rg", "name": "apim-bin",
                              "location": "westeurope", "sku": "Premium", "sample_config": true}]})
        .to_string(),
    )
    .unwrap();
    let faults = dir.path().join("faults.json");
    std::fs::write(
        &faults,
        json!({"latency_ms": 1, "unavailable_regions": ["eastus"]}).to_string(),
    )
    .unwrap();
    let (_child, url) = spawn(&[
        "--port",
        "0",
        "--seed-state",
        seed.to_str().unwrap(),
        "--time-scale",
        "0.5",
        "--fault-profile",
        faults.to_str().unwrap(),
    ]);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let http = reqwest::Client::new();
    let f = get_json(&http, &format!("{url}/_emulator/faults")).await;
    assert_eq!(f["latency_ms"], 1);
    assert_eq!(f["unavailable_regions"][0], "eastus");
    let tok: Value = http
        .post(format!("{url}/_emulator/tokens"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let svc = http
        .get(format!("{url}/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ApiManagement/service/apim-bin?api-version=2024-05-01"))
        .bearer_auth(tok["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(svc.status(), 200);
    let body: Value = svc.json().await.unwrap();
    assert_eq!(body["properties"]["provisioningState"], "Succeeded");

    // The state dump loads back through --seed-state.
    let dump = http
        .get(format!("{url}/_emulator/state"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, dump).unwrap();
    let (_child2, url2) = spawn(&["--seed-state", state.to_str().unwrap()]);
    let d2 = get_json(&http, &format!("{url2}/_emulator/state")).await;
    assert_eq!(d2["services"][0]["name"], "apim-bin");

    // SIGTERM stops it cleanly.
    let mut child = _child2;
    let pid = child.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "{exit}");
}

#[test]
fn binary_refuses_bad_files_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("faults.json");
    std::fs::write(&bad, r#"{"status_500": 3}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_drsync-emulator"))
        .args(["--fault-profile", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("status_500"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_drsync-emulator"))
        .args([
            "--seed-state",
            dir.path().join("missing.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
}
