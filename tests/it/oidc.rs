//! Single sign-on against a real OpenID provider (npm `oidc-provider`, started by
//! tests/peers/oidc_provider.js on loopback): the provider's access tokens give a reader or an
//! admin by their `roles` claim (RS256 and ES256); expired, wrongly signed, wrong-audience, `alg: none` and HS256
//! tokens are refused with the reason audited (never the token); a key the provider rotates to
//! is taken up; the tokens file is reloaded on SIGHUP and when it changes; the node's start and
//! stop are audited; and the page signs in through the provider's own login form in headless
//! Chromium and signs out again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::browser::Driver;
use crate::common::*;

const AUDIENCE: &str = "urn:triage-node:test";

struct Provider {
    _child: Killed,
    port: u16,
    keyfile: PathBuf,
    client: reqwest::blocking::Client,
}

impl Provider {
    /// Start (or restart, with the same port and key file) the provider; `rotate` puts a new
    /// signing key first.
    fn start(keyfile: &Path, port: u16, node_url: &str, rotate: bool) -> Provider {
        Provider::start_with_ttl(keyfile, port, node_url, rotate, 600)
    }

    /// ... with access tokens that live `access_ttl` seconds.
    fn start_with_ttl(keyfile: &Path, port: u16, node_url: &str, rotate: bool, access_ttl: u32) -> Provider {
        let log = std::fs::File::create(keyfile.with_extension("log")).unwrap();
        let mut child = Command::new("node")
            .arg(repo().join("tests/peers/oidc_provider.js"))
            .arg(keyfile)
            .arg(port.to_string())
            .arg(node_url)
            .arg(AUDIENCE)
            .env("ROTATE", if rotate { "1" } else { "0" })
            .env("ACCESS_TTL", access_ttl.to_string())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let child = Killed(child);
        let port =
            line.split("port=").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse().ok()).unwrap_or_else(|| {
                panic!("the provider did not start: {line}\n{}", std::fs::read_to_string(keyfile.with_extension("log")).unwrap_or_default())
            });
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        Provider { _child: child, port, keyfile: keyfile.to_path_buf(), client }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn get(&self, path: &str) -> String {
        let rsp = self.client.get(format!("{}{path}", self.issuer())).send().unwrap();
        assert!(rsp.status().is_success(), "{path}: {}", rsp.status());
        rsp.text().unwrap()
    }

    /// An access token the provider issues for `user`.
    fn token(&self, user: &str) -> String {
        self.get(&format!("/test/token?user={user}"))
    }

    fn forge(&self, kind: &str) -> String {
        self.get(&format!("/test/forge?kind={kind}&user=dr.grey"))
    }

    fn restart(self, node_url: &str, rotate: bool) -> Provider {
        let (port, keyfile) = (self.port, self.keyfile.clone());
        drop(self);
        Provider::start(&keyfile, port, node_url, rotate)
    }
}

fn ready() -> bool {
    have_tool("node") && require("npm oidc-provider (.oidc/node_modules)", repo().join(".oidc/node_modules/oidc-provider/package.json").exists())
}

fn sso_node(provider: &Provider, tokens_file: &Path) -> Node {
    Node::start(NodeOptions {
        http: vec![format!("tokens_file = \"{}\"", tokens_file.display())],
        extra: vec![format!(
            "[http.oidc]\nenabled = true\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nclient_id = \"triage-page\"\nscopes = \"openid profile triage\"\njwks_min_refresh = \"1s\"",
            provider.issuer()
        )],
        ..NodeOptions::default()
    })
}

fn call(node: &Node, path: &str, token: &str) -> (u16, String) {
    let rsp = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{}{path}", node.http_port.unwrap()))
        .bearer_auth(token)
        .timeout(Duration::from_secs(20))
        .send()
        .unwrap();
    (rsp.status().as_u16(), rsp.text().unwrap())
}

fn audit(node: &Node) -> String {
    let out = node.cli(&["audit", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn user_auth_lines(list: &str) -> Vec<&str> {
    list.lines().filter(|l| l.contains("user_auth")).collect()
}

#[test]
fn provider_tokens_give_roles_bad_ones_are_refused_and_audited_and_a_rotated_key_is_accepted() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start(&dir.path().join("keys.json"), 0, "http://127.0.0.1:1", false);
    let tokens_file = dir.path().join("tokens");
    let (bot_secret, bot_line) = new_token_line("ops-bot", "reader");
    std::fs::write(&tokens_file, format!("{bot_line}\n")).unwrap();
    let mut node = sso_node(&provider, &tokens_file);

    // A reader's token: the worklist and who they are; an admin route is refused (403).
    let reader = provider.token("dr.grey");
    let (status, body) = call(&node, "/api/me", &reader);
    assert_eq!(status, 200, "{body}");
    let me: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((me["name"].as_str(), me["role"].as_str()), (Some("dr.grey"), Some("reader")), "{me}");
    assert_eq!(call(&node, "/api/worklist", &reader).0, 200);
    let (status, body) = call(&node, "/api/aes", &reader);
    assert_eq!(status, 403, "{body}");
    // An admin's token reaches the admin route; a user without a role on this node is refused.
    assert_eq!(call(&node, "/api/aes", &provider.token("admin.ann")).0, 200);
    let (status, body) = call(&node, "/api/worklist", &provider.token("nobody"));
    assert_eq!(status, 403, "{body}");
    // ES256, with the provider's published EC key, is accepted too.
    let (status, body) = call(&node, "/api/worklist", &provider.forge("es256"));
    assert_eq!(status, 200, "{body}");
    // The static token still works beside single sign-on.
    assert_eq!(call(&node, "/api/worklist", &bot_secret).0, 200);

    // Bad tokens: 401, and the reason in the answer and in the audit trail.
    let mut bad = vec![];
    for (kind, reason) in [
        ("expired", "expired"),
        ("other-key", "bad signature"),
        ("unknown-kid", "unknown key"),
        ("wrong-audience", "wrong audience"),
        ("none", "algorithm none not allowed"),
        ("hs256", "algorithm HS256 not allowed"),
    ] {
        let token = provider.forge(kind);
        let (status, body) = call(&node, "/api/worklist", &token);
        assert_eq!(status, 401, "{kind}: {body}");
        assert!(body.contains(reason), "{kind}: {body}");
        bad.push((token, reason));
    }
    let list = audit(&node);
    let auth = user_auth_lines(&list);
    let logins: Vec<&&str> = auth.iter().filter(|l| l.contains("user:dr.grey") && l.contains("\"login\"")).collect();
    assert_eq!(logins.len(), 2, "one sign-in per token (the reader's, used three times, and the ES256 one): {auth:#?}");
    assert!(logins[0].contains("\"role\":\"reader\"") && logins[0].contains("\"oidc\""), "{}", logins[0]);
    assert!(auth.iter().any(|l| l.contains("user:admin.ann") && l.contains("\"role\":\"admin\"")), "{auth:#?}");
    for (token, reason) in &bad {
        assert!(auth.iter().any(|l| l.contains("\"refused\"") && l.contains(reason)), "{reason} audited: {auth:#?}");
        assert!(!list.contains(token.as_str()) && !node.log().contains(token.as_str()), "a token in the audit trail or the log");
    }
    assert!(!list.contains(&reader) && !node.log().contains(&reader));

    // The provider rotates to a new key: its new tokens are accepted (the node fetches the JWKS
    // again on the unknown key id), and a token signed before with the old key (still published)
    // stays valid.
    let before = provider.token("admin.ann");
    let provider = provider.restart("http://127.0.0.1:1", true);
    let rotated = provider.token("dr.grey");
    assert_ne!(rotated.split('.').next(), reader.split('.').next(), "a new key id in the header");
    // (At most one JWKS fetch per `jwks_min_refresh`, 1 s here: the unknown-kid token above
    // may just have used it.)
    wait_for(&node, "the rotated key taken up", Duration::from_secs(5), || call(&node, "/api/worklist", &rotated).0 == 200);
    assert!(node.log().contains("fetched again"));
    assert_eq!(call(&node, "/api/aes", &before).0, 200);

    // The tokens file, reloaded without a restart: on SIGHUP (the file's time kept as it was,
    // so only the signal can tell), then when the file changes.
    let reference = dir.path().join("tokens.before");
    std::fs::copy(&tokens_file, &reference).unwrap();
    let (new_secret, new_line) = new_token_line("ops-bot2", "admin");
    std::fs::write(&tokens_file, format!("{new_line}\n")).unwrap();
    assert!(Command::new("touch").arg("-r").arg(&reference).arg(&tokens_file).status().unwrap().success());
    assert_eq!(call(&node, "/api/aes", &new_secret).0, 401, "not before the reload");
    assert!(Command::new("kill").args(["-HUP", &node.pid().unwrap().to_string()]).status().unwrap().success());
    assert!(node.wait_for_log("SIGHUP", Duration::from_secs(10)), "{}", node.log());
    assert_eq!(call(&node, "/api/aes", &new_secret).0, 200);
    assert_eq!(call(&node, "/api/worklist", &bot_secret).0, 401, "the removed token is refused");
    assert!(node.log().matches("tokens_loaded=5").count() >= 2, "at start and at the reload: 4 from the environment + 1 from the file");
    let (third_secret, third_line) = new_token_line("ops-bot3", "reader");
    std::fs::write(&tokens_file, format!("{third_line}\n# an operator's note\n")).unwrap();
    wait_for(&node, "the changed file reloaded", Duration::from_secs(10), || call(&node, "/api/worklist", &third_secret).0 == 200);
    assert!(!node.log().contains(&third_secret) && !node.log().contains(&new_secret));

    // The node's start and stop are in the audit trail (Application Activity for ATNA).
    assert!(node.sigterm(Duration::from_secs(20)).is_some());
    let list = audit(&node);
    assert!(list.lines().any(|l| l.contains("application") && l.contains("\"start\"")), "{list}");
    assert!(list.lines().any(|l| l.contains("application") && l.contains("\"stop\"")), "{list}");
    assert!(node.cli(&["audit", "verify"]).status.success());

    // `doctor` meets the provider as the node does at start; with the provider gone it fails, naming it.
    let doctor = |node: &Node| String::from_utf8_lossy(&node.cli(&["doctor"]).stdout).to_string();
    let out = doctor(&node);
    let issuer = provider.issuer();
    assert!(out.contains(&format!("ok    identity provider: {issuer}: discovery document and JWKS (")), "{out}");
    drop(provider);
    let out = doctor(&node);
    assert!(out.contains(&format!("FAIL  identity provider: {issuer}: the discovery document:")), "{out}");
}

/// `NAME ROLE sha256:HEX` and its secret, as `triage-node token add` makes them.
fn new_token_line(name: &str, role: &str) -> (String, String) {
    triage_node::http::auth::new_token(name, role).unwrap()
}

#[test]
fn the_page_signs_in_at_the_provider_and_signs_out_again() {
    if !(ready() && have_tool("chromium") && have_tool("chromedriver")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start(&dir.path().join("keys.json"), 0, "http://127.0.0.1:1", false);
    let tokens_file = dir.path().join("tokens");
    std::fs::write(&tokens_file, "").unwrap();
    let node = sso_node(&provider, &tokens_file);
    let page = format!("http://127.0.0.1:{}", node.http_port.unwrap());
    // The provider learns the page's address (its client's redirect URI) now that it is known;
    // its access tokens live 8 s, so the page must renew them to stay signed in.
    let (port, keyfile) = (provider.port, provider.keyfile.clone());
    drop(provider);
    let provider = Provider::start_with_ttl(&keyfile, port, &page, false, 8);

    let d = Driver::start();
    d.go(&format!("{page}/"));
    d.until("the single sign-on button", "return !document.getElementById('sso').hidden");
    d.js("document.getElementById('sso-signin').click()", json!([]));
    let issuer = provider.issuer();
    d.until("the provider's login form", "return !!document.querySelector('input[name=login]')");
    assert!(d.js("return location.href", json!([])).as_str().unwrap().starts_with(&issuer));
    d.js(
        "document.querySelector('input[name=login]').value = 'dr.grey'; document.querySelector('input[name=password]').value = 'any'; document.querySelector('form').requestSubmit();",
        json!([]),
    );
    // The provider asks for consent once; then back on the page, signed in.
    d.until(
        "the consent or the worklist",
        "return location.href.includes('/interaction/') && !document.querySelector('input[name=login]') && !!document.querySelector('form') || (!!document.getElementById('who') && document.getElementById('who').textContent.length > 0)",
    );
    if d.js("return location.href.includes('/interaction/')", json!([])) == json!(true) {
        d.js("document.querySelector('form').requestSubmit()", json!([]));
    }
    d.until("the worklist with the user's name", "return !!document.getElementById('who') && document.getElementById('who').textContent === 'dr.grey (reader)' && !document.getElementById('worklist').hidden");
    assert_eq!(d.js("return location.search", json!([])), json!(""), "the code is gone from the address");
    // Past the first access token's lifetime the reader is still signed in: the page renewed it
    // with the provider's refresh token (through the node's /auth/token), and the new one works.
    let first = d.js("return sessionStorage.getItem('triage-token')", json!([]));
    std::thread::sleep(Duration::from_secs(12));
    d.js("loadWorklist(false)", json!([]));
    std::thread::sleep(Duration::from_millis(1500));
    let (now, refused) =
        (d.js("return sessionStorage.getItem('triage-token')", json!([])), d.js("return document.getElementById('login-error').textContent", json!([])));
    assert_ne!(now, first, "the access token was renewed");
    assert_eq!(refused, json!(""), "not signed out");
    assert_eq!(d.js("return !document.getElementById('worklist').hidden", json!([])), json!(true), "still on the worklist");
    let list = audit(&node);
    assert!(user_auth_lines(&list).iter().any(|l| l.contains("user:dr.grey") && l.contains("\"login\"") && l.contains("\"oidc\"")), "{list}");

    // Sign-out: audited, the token gone from the tab, the provider's session ended.
    d.js("document.getElementById('signout').click()", json!([]));
    d.until("the provider's sign-out", &format!("return location.href.startsWith('{issuer}')"));
    if d.js("return !!document.querySelector('button[name=logout]')", json!([])) == json!(true) {
        d.js("document.querySelector('button[name=logout]').click()", json!([]));
    }
    d.until(
        "the sign-in form again",
        &format!("return location.href.startsWith('{page}') && !!document.getElementById('login') && !document.getElementById('login').hidden"),
    );
    assert_eq!(d.js("return sessionStorage.getItem('triage-token')", json!([])), json!(null));
    let list = audit(&node);
    assert!(user_auth_lines(&list).iter().any(|l| l.contains("user:dr.grey") && l.contains("\"logout\"")), "{list}");
}
