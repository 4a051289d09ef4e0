//! `triage-node doctor` on a fresh install: each check says ok, warn or FAIL with the fix;
//! it fails (exit 1) on a PACS that does not answer a C-ECHO and on key files others can read,
//! and passes once the PACS (DCMTK storescp) is up and the files are private.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::*;

#[test]
fn doctor_checks_a_fresh_install_and_says_what_to_fix() {
    if !have_tool("storescp") || !repo().join("models/demo-nodule/model.pt").exists() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (pacs_port, keys) = (free_port(), root.path().join("keys"));
    std::fs::create_dir_all(&keys).unwrap();
    let (pk, mk) = (keys.join("pseudonym.key"), keys.join("map.key"));
    std::fs::write(&pk, PSEUDONYM_KEY).unwrap();
    std::fs::write(&mk, MAP_KEY).unwrap();
    let config = root.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[dicom]\nport = 0\n[http]\nport = 0\n[storage]\ndata_dir = \"{}\"\n[deid]\npseudonym_key_file = \"{}\"\nmap_key_file = \"{}\"\n\
             [inference]\nmodels_dir = \"{}\"\ndevice = \"cpu\"\n[results]\ndestinations = [\"PACS\"]\n",
            root.path().join("data").display(),
            pk.display(),
            mk.display(),
            repo().join("models").display()
        ),
    )
    .unwrap();
    let node = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_triage-node")).arg("--config").arg(&config).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    for f in [&pk, &mk] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (ok, out) = node(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &pacs_port.to_string()]);
    assert!(ok, "{out}");
    for f in [&pk, &mk] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    // The PACS is down and the key files are readable by others: both fail, saying the fix.
    let (ok, out) = node(&["doctor"]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  keys:") && out.contains("readable by others"), "{out}");
    assert!(out.contains("ok    database:") && out.contains("ok    data directory:"), "{out}");
    assert!(out.contains("ok    models: demo-ct-hyperdense 1.0.0, demo-nodule 1.0.0 on Cpu"), "{out}");
    assert!(out.contains(&format!("FAIL  PACS PACS: C-ECHO to 127.0.0.1:{pacs_port} failed")), "{out}");
    assert!(out.contains("FAIL  pseudonym key file:") && out.contains("chmod 600"), "{out}");
    assert!(!out.contains(PSEUDONYM_KEY) && !out.contains(MAP_KEY), "never a key");

    // Fixed: the files private, the PACS up.
    for f in [&pk, &mk] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let received = tempfile::tempdir().unwrap();
    let scp = storescp_at(pacs_port, received.path(), &["-aet", "PACS"]);
    let (ok, out) = node(&["doctor"]);
    drop(scp);
    assert!(ok, "{out}");
    assert!(out.contains("ok    keys:"), "{out}");
    assert!(out.contains(&format!("ok    PACS PACS: C-ECHO to 127.0.0.1:{pacs_port} succeeded")) && out.contains("ok    pseudonym key file:"), "{out}");
}
