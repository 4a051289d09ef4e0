//! The Debian package (scripts/package-deb.sh, packaging/debian/): built from the test binary,
//! installed with dpkg, its unit checked by `systemd-analyze verify`, the installed node run as
//! the packaged user against the packaged configuration (doctor, then serve on port 104 with
//! only the capability the unit grants, answering a C-ECHO and storing a CT slice), then purged.
//! Needs root (dpkg); CI runs as root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::*;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The packaged user, with the one capability the unit grants, as systemd would start it.
fn as_packaged_user(args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=triage-node", "--regid=triage-node", "--init-groups", "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service", "--"])
        .arg("/usr/bin/triage-node")
        .args(["--config", "/etc/triage-node/triage-node.toml"])
        .args(args)
        // The HTTP port of the packaged file (8080) may be taken on a developer's machine.
        .env("TRIAGE__HTTP__PORT", "0");
    cmd
}

fn mode_and_owner(path: &str) -> (u32, String) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let owner = text(&run(Command::new("stat").args(["-c", "%U:%G", path]))).trim().to_string();
    assert_eq!(m.uid() == 0, owner.starts_with("root:"));
    (m.permissions().mode() & 0o7777, owner)
}

#[test]
fn debian_package_installs_runs_as_its_user_and_purges() {
    let root = unsafe { libc::geteuid() } == 0;
    if !require("root (dpkg installs the package)", root)
        || !have_tool("dpkg-deb")
        || !have_tool("systemd-analyze")
        || !have_tool("setpriv")
        || !have_tool("echoscu")
        || demo_cases().is_none()
    {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let built = run(Command::new(repo().join("scripts/package-deb.sh")).args(["--binary", env!("CARGO_BIN_EXE_triage-node"), "--out"]).arg(out_dir.path()));
    let deb = text(&built).trim().lines().last().unwrap().to_string();
    assert!(Path::new(&deb).exists(), "{deb}");
    let fields = text(&run(Command::new("dpkg-deb").args(["--field", &deb, "Package", "Depends"])));
    assert!(fields.contains("Package: triage-node") && fields.contains("adduser"), "{fields}");

    let _purge = Purge;
    run(Command::new("dpkg").args(["--install", &deb]));

    // The user, the folders and the fresh keys, with their modes.
    assert!(text(&run(Command::new("getent").args(["passwd", "triage-node"]))).contains("/usr/sbin/nologin"));
    assert_eq!(mode_and_owner("/var/lib/triage-node"), (0o750, "triage-node:triage-node".into()));
    assert_eq!(mode_and_owner("/etc/triage-node/keys"), (0o700, "triage-node:triage-node".into()));
    for key in ["/etc/triage-node/keys/pseudonym.key", "/etc/triage-node/keys/reid-map.key"] {
        assert_eq!(mode_and_owner(key), (0o600, "triage-node:triage-node".into()));
        assert_eq!(std::fs::read_to_string(key).unwrap().trim().len(), 64, "{key}: 64 hex digits");
    }
    assert_eq!(mode_and_owner("/etc/triage-node/triage-node.toml"), (0o640, "root:triage-node".into()));

    // The unit, as systemd would read it.
    let verify = Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/triage-node.service"]).output().unwrap();
    assert!(verify.status.success() && text(&verify).trim().is_empty(), "systemd-analyze verify: {}", text(&verify));
    let unit = std::fs::read_to_string("/lib/systemd/system/triage-node.service").unwrap();
    for option in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/triage-node",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "User=triage-node",
    ] {
        assert!(unit.contains(option), "unit lacks {option}");
    }

    // A model package the site would copy in, and a modality registered by the admin.
    run(Command::new("cp").arg("-r").arg(repo().join("models/demo-nodule")).arg("/var/lib/triage-node/models/"));
    run(Command::new("chown").args(["-R", "triage-node:triage-node", "/var/lib/triage-node/models"]));
    run(&mut as_packaged_user(&["ae", "add", "SCANNER", "--role", "modality", "--host", "127.0.0.1", "--port", "1"]));

    // doctor, as the packaged user: keys private, database, the model loading, port 104 free.
    let doctor = as_packaged_user(&["doctor"]).output().unwrap();
    let report = text(&doctor);
    assert!(doctor.status.success(), "{report}");
    for line in ["ok    keys:", "ok    database:", "ok    models: demo-nodule 1.0.0", "0.0.0.0:104 is free"] {
        assert!(report.contains(line), "doctor lacks {line:?}: {report}");
    }

    // Without the unit's capability, port 104 is the one failure, and doctor says why.
    let bare = Command::new("runuser")
        .args(["-u", "triage-node", "--", "/usr/bin/triage-node", "--config", "/etc/triage-node/triage-node.toml", "doctor"])
        .env("TRIAGE__HTTP__PORT", "0")
        .output()
        .unwrap();
    assert!(!bare.status.success() && text(&bare).contains("0.0.0.0:104 needs root or CAP_NET_BIND_SERVICE"), "{}", text(&bare));

    // serve, as the packaged user, on port 104: a C-ECHO and a stored instance.
    let mut node = as_packaged_user(&["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stop = KillOnDrop(node.id());
    wait_until("the packaged node answering C-ECHO on port 104", Duration::from_secs(60), || {
        Command::new("echoscu").args(["-aet", "SCANNER", "-aec", "TRIAGE", "127.0.0.1", "104"]).stderr(Stdio::null()).status().unwrap().success()
    });
    let (_, cases) = demo_cases().unwrap();
    run(Command::new("storescu").args(["-aet", "SCANNER", "-aec", "TRIAGE", "127.0.0.1", "104"]).arg(&cases[0].0));
    let stored: Vec<_> = walk(Path::new("/var/lib/triage-node/store")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "dcm")).collect();
    assert_eq!(stored.len(), 1, "one instance stored");
    assert_eq!(mode_and_owner(stored[0].to_str().unwrap()).1, "triage-node:triage-node");
    unsafe { libc::kill(node.id() as i32, libc::SIGTERM) };
    let status = node.wait().unwrap();
    std::mem::forget(stop);
    let mut log = String::new();
    std::io::Read::read_to_string(node.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "the node did not stop cleanly on SIGTERM: {log}");
    assert!(!log.contains(&std::fs::read_to_string("/etc/triage-node/keys/pseudonym.key").unwrap().trim().to_string()));

    // Purged: the files and configuration go, the keys and the data stay (the site decides).
    let purge = run(Command::new("dpkg").args(["--purge", "triage-node"]));
    assert!(text(&purge).contains("kept /etc/triage-node/keys"), "{}", text(&purge));
    assert!(!Path::new("/usr/bin/triage-node").exists() && !Path::new("/lib/systemd/system/triage-node.service").exists());
    assert!(!Path::new("/etc/triage-node/triage-node.toml").exists());
    assert!(Path::new("/etc/triage-node/keys/pseudonym.key").exists() && Path::new("/var/lib/triage-node").exists());
}

/// SIGKILL to a node a failed assertion left running.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// Leaves the machine as it was, pass or fail: the package purged, the kept keys and data removed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "triage-node"]).output();
        let _ = std::fs::remove_dir_all("/etc/triage-node");
        let _ = std::fs::remove_dir_all("/var/lib/triage-node");
    }
}
