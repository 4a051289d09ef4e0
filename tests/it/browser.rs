//! The worklist page in headless Chromium (Debian `chromium`, driven over the W3C WebDriver
//! protocol by `chromedriver`) against a running node holding urgent, positive, negative,
//! failed and not-applicable studies: sign-in refused with a wrong token and nothing shown,
//! rows in reading order with urgent ones marked, heatmap thumbnails, the demonstration
//! warning, a filter, the study view with its heatmap, a reader's verdict on a finding, the AE
//! page for the admin only, and a screenshot (its path is printed).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

pub(crate) struct Driver {
    child: Child,
    base: String,
    session: String,
    client: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl Driver {
    pub(crate) fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver").arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get(format!("{base}/status")).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000", format!("--user-data-dir={}", profile.path().display())]
        } } } });
        let rsp: Value = client.post(format!("{base}/session")).json(&caps).send().unwrap().json().unwrap();
        let session = rsp["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {rsp}")).to_string();
        Driver { child, base, session, client, _profile: profile }
    }

    pub(crate) fn post(&self, path: &str, body: Value) -> Value {
        let rsp: Value = self.client.post(format!("{}/session/{}{path}", self.base, self.session)).json(&body).send().unwrap().json().unwrap();
        assert!(rsp["value"].get("error").is_none(), "{path}: {rsp}");
        rsp["value"].clone()
    }

    pub(crate) fn go(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    pub(crate) fn js(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Poll `script` until it returns true.
    pub(crate) fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.js(script, json!([])) != json!(true) {
            assert!(Instant::now() < deadline, "the page never showed {what}; page text: {}", self.js("return document.body.innerText", json!([])));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn screenshot(&self, path: &std::path::Path) {
        let rsp: Value = self.client.get(format!("{}/session/{}/screenshot", self.base, self.session)).send().unwrap().json().unwrap();
        let b64 = rsp["value"].as_str().unwrap();
        let bytes = base64_decode(b64);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.client.delete(format!("{}/session/{}", self.base, self.session)).send();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk.iter().fold(0u32, |acc, &c| (acc << 6) | value(c)) << (6 * (4 - chunk.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad.min(2)]);
    }
    out
}

fn sign_in(d: &Driver, token: &str) {
    d.js("document.getElementById('token').value = arguments[0]; document.getElementById('login-form').requestSubmit();", json!([token]));
}

#[test]
fn the_worklist_page_shows_urgent_first_and_nothing_without_a_token() {
    if !(have_tool("chromium") && have_tool("chromedriver")) {
        return;
    }
    let Some((node, sent, _work)) = crate::http::triaged_node() else { return };
    let url = format!("http://127.0.0.1:{}/", node.http_port.unwrap());
    let d = Driver::start();
    d.go(&url);

    // Signed out: the sign-in form, no rows. A wrong token is refused and shows nothing.
    d.until("the sign-in form", "return !document.getElementById('login').hidden && document.getElementById('worklist').hidden");
    sign_in(&d, "wrong-token-0123456789abcdef");
    d.until("the refusal", "return document.getElementById('login-error').textContent.includes('refused')");
    assert_eq!(d.js("return document.querySelectorAll('#rows tbody tr').length", json!([])), json!(0));
    assert_eq!(d.js("return document.body.innerText.includes('DEMO^') || document.body.innerText.includes('DEMO0')", json!([])), json!(false));

    // A reader: every study, urgent rows first and marked, the demonstration warning shown.
    sign_in(&d, READER_TOKEN);
    let n = sent.len();
    d.until("every study", &format!("return document.querySelectorAll('#rows tbody tr').length === {n}"));
    let priorities: Vec<String> =
        serde_json::from_value(d.js("return [...document.querySelectorAll('#rows tbody tr')].map(r => r.dataset.priority)", json!([]))).unwrap();
    let rank = |p: &str| ["URGENT", "POSITIVE", "FAILED", "NEGATIVE", "NOT_APPLICABLE"].iter().position(|x| *x == p).unwrap();
    assert!(priorities.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])), "{priorities:?}");
    assert!(priorities.contains(&"FAILED".to_string()) && priorities.contains(&"NEGATIVE".to_string()), "{priorities:?}");
    if priorities[0] == "URGENT" {
        let colour = d.js("return getComputedStyle(document.querySelector('#rows tbody tr td.priority')).backgroundColor", json!([]));
        assert_eq!(colour, json!("rgb(204, 0, 0)"), "urgent rows are marked red");
    }
    assert_eq!(d.js("return !document.getElementById('demo-warning').hidden", json!([])), json!(true));
    assert_eq!(d.js("return document.getElementById('nav-aes').hidden", json!([])), json!(true), "no AE page for a reader");
    let positives = priorities.iter().filter(|p| rank(p) <= 1).count();
    d.until(
        "every positive row's heatmap thumbnail",
        &format!("const t = [...document.querySelectorAll('img.thumb')]; return t.length === {positives} && t.every(i => i.complete && i.naturalWidth > 0)"),
    );
    assert_eq!(d.js("return document.body.innerText.includes('DEMO^CASE000')", json!([])), json!(true), "patients named for a signed-in reader");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("worklist.png");
    d.screenshot(&shot);
    eprintln!("worklist screenshot: {}", shot.display());

    // A filter: only the study no model could analyse.
    d.js("document.getElementById('f-priority').value = 'FAILED'; document.getElementById('filters').requestSubmit();", json!([]));
    d.until(
        "the filtered list",
        "const rows = [...document.querySelectorAll('#rows tbody tr')]; return rows.length === 1 && rows[0].dataset.priority === 'FAILED'",
    );
    assert_eq!(d.js("return document.querySelector('#rows tbody tr').innerText.includes('not analysed')", json!([])), json!(true));

    // The study view of the most urgent study: its findings and the full heatmap.
    d.js("document.getElementById('f-priority').value = ''; document.getElementById('filters').requestSubmit();", json!([]));
    d.until("the whole list again", &format!("return document.querySelectorAll('#rows tbody tr').length === {n}"));
    d.js("document.querySelector('#rows tbody tr').click()", json!([]));
    d.until("the study view", "return !document.getElementById('study').hidden && !!document.getElementById('study-title')");
    if rank(&priorities[0]) <= 1 {
        d.until("the full heatmap", "return [...document.querySelectorAll('img.full')].some(i => i.complete && i.naturalWidth > 0)");
    }
    d.js("document.getElementById('btn-claim').click()", json!([]));
    d.until("the claim", "return document.body.innerText.includes('claimed by dr.grey')");
    // The reader's verdict on the first finding, given on the page: disagree, with a comment;
    // shown back, and in the vendor's export (de-identified: no comment, no reader).
    d.js(
        "const f = document.querySelector('.feedback'); f.querySelector('.fb-comment').value = 'motion artefact COMMENTTEXT'; f.querySelector('.fb-disagree').click();",
        json!([]),
    );
    d.until("the verdict saved", "return document.body.innerText.includes('your verdict: disagree')");
    let export = reqwest::blocking::Client::new().get(format!("{url}api/feedback/export")).bearer_auth(ADMIN_TOKEN).send().unwrap().text().unwrap();
    assert!(export.lines().count() == 2 && export.contains(",disagree,"), "{export}");
    assert!(!export.contains("COMMENTTEXT") && !export.contains("dr.grey"), "{export}");
    d.screenshot(&std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("study.png"));

    // The admin's AE page lists the registered AEs.
    d.js("document.getElementById('signout').click()", json!([]));
    d.until("the sign-in form again", "return !document.getElementById('login').hidden");
    sign_in(&d, ADMIN_TOKEN);
    d.until("the admin's AE link", "return !document.getElementById('nav-aes').hidden");
    d.go(&format!("{url}#/aes"));
    d.until("the AE table", "return [...document.querySelectorAll('#ae-rows tbody tr')].some(r => r.dataset.ae === 'STORESCU')");
    // The admin's performance page: the demo model's row, with the verdict given above.
    d.go(&format!("{url}#/performance"));
    d.until("the performance table", "return [...document.querySelectorAll('#perf-rows tbody tr')].some(r => r.dataset.model === 'demo-nodule')");
    let row = d.js("return document.querySelector('#perf-rows tbody tr[data-model=\"demo-nodule\"]').innerText", json!([]));
    assert!(row.as_str().unwrap().contains("n=1"), "{row}");
    // The shadow comparison below it: the figures /api/shadow gives, and in plain words.
    let shadow: Value = reqwest::blocking::Client::new().get(format!("{url}api/shadow")).bearer_auth(ADMIN_TOKEN).send().unwrap().json().unwrap();
    let c = &shadow[0];
    d.until("the shadow table", "return [...document.querySelectorAll('#shadow-rows tbody tr')].some(r => r.dataset.model === 'demo-nodule-next')");
    let cells = d.js("return [...document.querySelectorAll('#shadow-rows tbody tr[data-model=\"demo-nodule-next\"] td')].map(t => t.innerText)", json!([]));
    let pct = |p: f64| format!("{:.1}%", (p * 1000.0).floor() / 10.0);
    let a = &c["agreement"];
    let agreement =
        format!("{} ({}-{}, n={})", pct(a["value"].as_f64().unwrap()), pct(a["low"].as_f64().unwrap()), pct(a["high"].as_f64().unwrap()), a["total"]);
    assert_eq!(
        cells,
        json!([
            "demo-nodule-next",
            "2.0.0",
            "demo-nodule",
            format!("{} ({})", c["studies"], c["both_triaged"]),
            agreement,
            format!("{:.2}", c["score_correlation"].as_f64().unwrap()),
            c["would_raise_to_urgent"].to_string(),
            c["would_lower_from_urgent"].to_string(),
            c["shadow_failed"].to_string()
        ]),
        "{shadow}"
    );
    let words = d.js("return document.querySelector('#shadow-words li[data-model=\"demo-nodule-next\"]').innerText", json!([]));
    let raise = c["would_raise_to_urgent"].as_u64().unwrap();
    let expected = format!("demo-nodule-next 2.0.0 agreed with demo-nodule on {} of {} studies", a["successes"], a["total"]);
    let words = words.as_str().unwrap();
    assert!(words.starts_with(&expected) && words.contains(&format!("Had it been live, {raise} stud")), "{words}");
    d.screenshot(&std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("performance.png"));
}
