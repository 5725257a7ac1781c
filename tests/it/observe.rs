//! Issue 14, "Observe" (metrics and logs), over real server processes: `/metrics` moves
//! with pushes, pulls, an import, GC and failed logins; who may scrape it on the main port
//! and on `--metrics-addr`; the text is strict Prometheus exposition; JSON log lines, the
//! access line's fields, `X-Request-Id`, audit lines, and what is (not) logged at login.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::fixture::fixture_tar;
use crate::security::{basic, client, htpasswd};
use crate::support::{image_manifest, scratch_dir, sha256, Server, OCI_MANIFEST};

const TOKEN: &str = "obs-admin-token";

/// One sample: its name and labels, e.g. `airdock_x_total{a="b",c="d"}` (labels sorted).
type Series = BTreeMap<String, f64>;

/// Parse `text` as the Prometheus text exposition format (0.0.4), strictly: every line a
/// `# HELP`, a `# TYPE` or a sample; names and label names by the format's grammar; label
/// values properly quoted and escaped; each family typed once, before its samples, and its
/// samples together; counters named `_total`; histogram buckets cumulative with ascending
/// `le` up to `+Inf`, and `_count` equal to the `+Inf` bucket. Panics naming the line.
fn parse_exposition(text: &str) -> Series {
    fn is_name(s: &str) -> bool {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }
    fn value(s: &str) -> Option<f64> {
        match s {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => s.parse().ok(),
        }
    }
    /// `{a="b",...}` → sorted pairs and the rest of the line.
    fn labels(s: &str, line: &str) -> (Vec<(String, String)>, String) {
        let mut out = Vec::new();
        let mut rest = s.strip_prefix('{').expect("labels start with {");
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                out.sort();
                return (out, r.to_owned());
            }
            let eq = rest
                .find('=')
                .unwrap_or_else(|| panic!("label without =: {line}"));
            let name = &rest[..eq];
            assert!(
                is_name(name) && !name.contains(':'),
                "label name {name:?}: {line}"
            );
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted label value: {line}"));
            let mut v = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => v.push('\\'),
                        Some((_, '"')) => v.push('"'),
                        Some((_, 'n')) => v.push('\n'),
                        other => panic!("bad escape {other:?}: {line}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, '\n')) => panic!("newline in a label value: {line}"),
                    Some((_, c)) => v.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            };
            out.push((name.to_owned(), v));
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let mut series = Series::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = HashSet::new();
    let mut done = HashSet::new();
    let mut current: Option<String> = None;
    // Per histogram series (labels without `le`): the last bucket's le and count.
    let mut buckets: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line in the exposition");
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(is_name(name), "bad name in {line}");
            match kw {
                "HELP" => assert!(helped.insert(name.to_owned()), "second HELP: {line}"),
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "type {t}: {line}"
                    );
                    assert!(!typed.contains_key(name), "second TYPE: {line}");
                    if let Some(prev) = current.replace(name.to_owned()) {
                        done.insert(prev);
                    }
                    typed.insert(name.to_owned(), t.to_owned());
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "comment without a space: {line}");
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(is_name(name), "bad sample name: {line}");
        let (pairs, rest) = if line[name_end..].starts_with('{') {
            labels(&line[name_end..], line)
        } else {
            (Vec::new(), line[name_end..].to_owned())
        };
        let mut fields = rest.split_whitespace();
        let v = fields
            .next()
            .and_then(value)
            .unwrap_or_else(|| panic!("bad value: {line}"));
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp: {line}"));
        }
        assert!(fields.next().is_none(), "trailing text: {line}");
        let family = current
            .clone()
            .unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
        assert!(!done.contains(&family), "family {family} continued later");
        let kind = typed[&family].as_str();
        let suffix = name.strip_prefix(family.as_str());
        match kind {
            "histogram" => assert!(
                matches!(suffix, Some("_bucket" | "_sum" | "_count")),
                "{name} in histogram {family}"
            ),
            _ => assert_eq!(name, family, "sample of another family: {line}"),
        }
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} not named _total");
            assert!(v >= 0.0, "negative counter: {line}");
        }
        let key_of = |pairs: &[(String, String)]| {
            let l: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{{{}}}", l.join(","))
        };
        if kind == "histogram" {
            let base: Vec<(String, String)> =
                pairs.iter().filter(|(k, _)| k != "le").cloned().collect();
            let id = format!("{family}{}", key_of(&base));
            match suffix {
                Some("_bucket") => {
                    let le = pairs
                        .iter()
                        .find(|(k, _)| k == "le")
                        .and_then(|(_, v)| value(v))
                        .unwrap_or_else(|| panic!("bucket without le: {line}"));
                    if let Some((last_le, last_n)) = buckets.get(&id) {
                        assert!(le > *last_le, "le not ascending: {line}");
                        assert!(v >= *last_n, "buckets not cumulative: {line}");
                    }
                    buckets.insert(id, (le, v));
                }
                Some("_count") => {
                    let (le, n) = buckets
                        .get(&id)
                        .unwrap_or_else(|| panic!("count before buckets: {line}"));
                    assert!(le.is_infinite(), "last bucket is not +Inf: {line}");
                    assert_eq!(*n, v, "_count differs from the +Inf bucket: {line}");
                }
                _ => {}
            }
        }
        let key = format!("{name}{}", key_of(&pairs));
        assert!(series.insert(key, v).is_none(), "duplicate sample: {line}");
    }
    for name in typed.keys() {
        assert!(
            name.starts_with("airdock_"),
            "{name} is not prefixed airdock_"
        );
        assert!(helped.contains(name), "{name} has no HELP");
    }
    series
}

#[test]
fn the_checker_refuses_what_prometheus_would() {
    let good = "# HELP airdock_a_total x\n# TYPE airdock_a_total counter\n\
airdock_a_total{k=\"v \\\"q\\\"\"} 3\n";
    assert_eq!(
        parse_exposition(good)["airdock_a_total{k=\"v \"q\"\"}"],
        3.0
    );
    let h = |name: &str, t: &str| format!("# HELP {name} x\n# TYPE {name} {t}\n");
    for bad in [
        "airdock_a_total 1\n".to_owned(),
        format!("{}airdock_a 1\n", h("airdock_a", "counter")),
        format!(
            "{}airdock_a_total{{k=v}} 1\n",
            h("airdock_a_total", "counter")
        ),
        format!("{}airdock_a_total 1 x\n", h("airdock_a_total", "counter")),
        format!(
            "{}airdock_h_bucket{{le=\"1\"}} 2\nairdock_h_bucket{{le=\"+Inf\"}} 1\n\
airdock_h_count 1\n",
            h("airdock_h", "histogram")
        ),
        format!(
            "{}airdock_g 1\n{}airdock_g2 1\nairdock_g 2\n",
            h("airdock_g", "gauge"),
            h("airdock_g2", "gauge")
        ),
        "# TYPE airdock_g gauge\nairdock_g 1\n".to_owned(),
        format!("{}other_g 1\n", h("other_g", "gauge")),
    ] {
        let r = std::panic::catch_unwind(|| parse_exposition(&bad));
        assert!(r.is_err(), "accepted: {bad:?}");
    }
}

/// The value of `series` (`name{labels}` exactly as the checker keys it), 0 when absent.
fn val(s: &Series, series: &str) -> f64 {
    s.get(series).copied().unwrap_or(0.0)
}

async fn scrape(c: &reqwest::Client, url: &str, auth: Option<&str>) -> Series {
    let mut req = c.get(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.expect("scrape");
    assert_eq!(r.status(), StatusCode::OK, "scrape {url}");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse_exposition(&r.text().await.expect("body"))
}

/// A server with alice (admin) and bob, the admin token [`TOKEN`] and `extra` flags.
fn auth_server(dir: &Path, extra: &[&str]) -> Server {
    let hp = htpasswd(dir, &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let cfg = dir.join("airdock.yaml");
    std::fs::write(
        &cfg,
        format!(
            "auth:\n  htpasswd: {}\n  mode: basic\n  admins: [alice]\n  max_failures: 3\n\
access:\n  - repos: [\"**\"]\n    users: [alice, bob]\n    allow: [pull, push, delete]\n",
            hp.display()
        ),
    )
    .expect("write config");
    let mut args = vec![
        "--config",
        cfg.to_str().expect("utf-8"),
        "--admin-token",
        TOKEN,
    ];
    args.extend_from_slice(extra);
    Server::start_with_args(&args)
}

async fn send(
    c: &reqwest::Client,
    s: &Server,
    method: Method,
    path: &str,
    auth: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    c.request(method.clone(), s.url(path))
        .header("authorization", auth)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Push a config, a layer of `layer_len` bytes and a manifest tagged `tag` as `auth`;
/// returns the layer's digest and the manifest's bytes.
async fn push_image(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    tag: &str,
    auth: &str,
    layer_len: usize,
) -> (String, Vec<u8>) {
    let config = b"{}".to_vec();
    let layer = crate::support::xorshift_bytes(layer_len, layer_len as u64 + 1);
    let (cd, ld) = (sha256(&config), sha256(&layer));
    for (d, b) in [(&cd, config.clone()), (&ld, layer.clone())] {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={d}");
        let r = send(c, s, Method::POST, &path, auth, b).await;
        assert_eq!(r.status(), StatusCode::CREATED, "push blob");
    }
    let m = image_manifest(&cd, config.len(), &ld, layer.len()).into_bytes();
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("authorization", auth)
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .expect("put manifest");
    assert_eq!(r.status(), StatusCode::CREATED, "put manifest");
    (ld, m)
}

#[tokio::test]
async fn metrics_move_with_push_pull_import_gc_and_failed_logins() {
    let dir = scratch_dir("airdock-obs-");
    let s = auth_server(dir.path(), &["--metrics-top-repositories", "1"]);
    let c = client();
    let admin = format!("Bearer {TOKEN}");
    let alice = basic("alice", "alice-pw");
    let url = s.url("/metrics");
    let before = scrape(&c, &url, Some(&admin)).await;
    assert_eq!(
        val(&before, "airdock_build_info{version=\"0.1.0\"}"),
        1.0,
        "{before:?}"
    );
    assert_eq!(val(&before, "airdock_stored_bytes{}"), 0.0);

    // Push two images (the second repository smaller), pull one back.
    let (layer, manifest) = push_image(&c, &s, "lab/big", "v1", &alice, 50_000).await;
    push_image(&c, &s, "lab/small", "v1", &alice, 1_000).await;
    let r = send(
        &c,
        &s,
        Method::GET,
        &format!("/v2/lab/big/blobs/{layer}"),
        &alice,
        vec![],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("blob").len(), 50_000);
    let r = send(
        &c,
        &s,
        Method::GET,
        "/v2/lab/big/manifests/v1",
        &alice,
        vec![],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    // An import, a refused import, a GC.
    let tar = fixture_tar("multi-image");
    let r = send(
        &c,
        &s,
        Method::POST,
        "/admin/v1/import?repository=lab/imported",
        &admin,
        tar.clone(),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let r = send(
        &c,
        &s,
        Method::POST,
        "/admin/v1/import?repository=lab/bad",
        &admin,
        b"not a tar at all".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = send(
        &c,
        &s,
        Method::POST,
        "/admin/v1/gc?grace=0s",
        &admin,
        vec![],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    let after = scrape(&c, &url, Some(&admin)).await;
    let moved = |series: &str| val(&after, series) - val(&before, series);
    assert_eq!(
        moved("airdock_http_requests_total{class=\"manifest\",code=\"201\",method=\"PUT\"}"),
        2.0
    );
    assert_eq!(
        moved("airdock_http_requests_total{class=\"upload\",code=\"201\",method=\"POST\"}"),
        4.0
    );
    assert_eq!(
        moved("airdock_http_requests_total{class=\"blob\",code=\"200\",method=\"GET\"}"),
        1.0
    );
    assert_eq!(
        moved("airdock_http_requests_total{class=\"admin\",code=\"400\",method=\"POST\"}"),
        1.0
    );
    assert!(moved("airdock_http_sent_bytes_total{class=\"blob\"}") >= 50_000.0);
    assert!(moved("airdock_http_received_bytes_total{class=\"upload\"}") >= 51_000.0);
    assert!(
        moved("airdock_http_received_bytes_total{class=\"admin\"}") >= tar.len() as f64,
        "the tar's bytes were read"
    );
    assert_eq!(
        moved("airdock_http_request_duration_seconds_count{class=\"blob\",method=\"GET\"}"),
        1.0
    );
    assert_eq!(moved("airdock_imports_total{result=\"ok\"}"), 1.0);
    assert_eq!(moved("airdock_imports_total{result=\"refused\"}"), 1.0);
    assert!(moved("airdock_import_bytes_total{}") > 0.0);
    assert_eq!(moved("airdock_import_duration_seconds_count{}"), 1.0);
    assert_eq!(moved("airdock_gc_runs_total{result=\"ok\"}"), 1.0);
    assert_eq!(moved("airdock_gc_duration_seconds_count{}"), 1.0);
    // The scrape itself is in flight.
    assert!(val(&after, "airdock_http_requests_in_flight{}") >= 1.0);
    assert_eq!(val(&after, "airdock_upload_sessions_open{}"), 0.0);
    // What is stored: three repositories; the largest has its own series, the rest are
    // summed as `_other` (top 1).
    assert_eq!(val(&after, "airdock_repositories{}"), 3.0);
    let big = 50_000.0 + 2.0 + manifest.len() as f64;
    assert_eq!(
        val(
            &after,
            "airdock_repository_stored_bytes{repository=\"lab/big\"}"
        ),
        big
    );
    assert_eq!(
        val(
            &after,
            "airdock_repository_manifests{repository=\"lab/big\"}"
        ),
        1.0
    );
    // Config, layer and the manifest's own file.
    assert_eq!(
        val(&after, "airdock_repository_blobs{repository=\"lab/big\"}"),
        3.0
    );
    let other = val(
        &after,
        "airdock_repository_stored_bytes{repository=\"_other\"}",
    );
    assert!(other > 1_000.0, "{other}");
    assert!(
        !after
            .keys()
            .any(|k| k.contains("lab/small") || k.contains("lab/imported")),
        "only the top repository has its own series"
    );
    // The `{}` config blob is shared by both pushed images: counted once in all.
    let total = val(&after, "airdock_stored_bytes{}");
    assert!(
        total < big + other && total > big,
        "{total} vs {big} + {other}"
    );
    assert!(val(&after, "airdock_stored_manifests{}") >= 3.0);

    // Failed logins: counted; the third locks the address out; the next is refused unseen.
    for _ in 0..3 {
        let r = send(&c, &s, Method::GET, "/v2/", &basic("alice", "nope"), vec![]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = send(&c, &s, Method::GET, "/v2/", &basic("alice", "nope"), vec![]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = send(&c, &s, Method::GET, "/v2/", "Bearer not-a-jwt", vec![]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let last = scrape(&c, &url, Some(&admin)).await;
    let moved = |series: &str| val(&last, series) - val(&after, series);
    assert_eq!(
        moved("airdock_auth_failures_total{reason=\"password\"}"),
        3.0
    );
    assert_eq!(moved("airdock_auth_failures_total{reason=\"token\"}"), 1.0);
    assert_eq!(moved("airdock_auth_lockouts_total{}"), 1.0);
    assert_eq!(moved("airdock_auth_locked_out_requests_total{}"), 1.0);
    assert_eq!(
        moved("airdock_http_requests_total{class=\"base\",code=\"429\",method=\"GET\"}"),
        1.0
    );
}

#[tokio::test]
async fn who_may_scrape_the_main_port() {
    let c = client();
    // Authentication on: admins (token, password) yes; other users and anonymous no.
    let dir = scratch_dir("airdock-obs-");
    let s = auth_server(dir.path(), &[]);
    let url = s.url("/metrics");
    let status = |auth: Option<String>| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let mut req = c.get(&url);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.expect("scrape");
            let challenge = r.headers().get("www-authenticate").cloned();
            (r.status(), challenge)
        }
    };
    let (st, challenge) = status(None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .as_deref(),
        Some(airdock::auth::ADMIN_CHALLENGE)
    );
    assert_eq!(
        status(Some(basic("bob", "bob-pw"))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(Some(basic("alice", "alice-pw"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status(Some(format!("Bearer {TOKEN}"))).await.0,
        StatusCode::OK
    );
    drop(s);

    // `metrics.anonymous: true` (here its flag): anyone.
    let s = auth_server(dir.path(), &["--metrics-anonymous"]);
    scrape(&c, &s.url("/metrics"), None).await;
    drop(s);

    // Authentication off: the admin token, as for the admin API.
    let s = Server::start_with_args(&["--admin-token", TOKEN]);
    let r = c.get(s.url("/metrics")).send().await.expect("scrape");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    scrape(&c, &s.url("/metrics"), Some(&format!("Bearer {TOKEN}"))).await;
}

/// The address of the `metrics served on ADDR` line.
fn metrics_addr(s: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = s.logs();
        if let Some(line) = logs.lines().find(|l| l.starts_with("metrics served on ")) {
            return line["metrics served on ".len()..].trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no metrics line:\n{logs}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn the_metrics_listener_serves_only_metrics_to_anyone() {
    let c = client();
    let dir = scratch_dir("airdock-obs-");
    // The environment twin of --metrics-addr.
    let hp = htpasswd(dir.path(), &[("alice", "alice-pw")]);
    let s = Server::start_in_env(
        scratch_dir("airdock-obs-data-"),
        &["--htpasswd", hp.to_str().expect("utf-8")],
        &[("AIRDOCK_METRICS_ADDR", "127.0.0.1:0")],
    );
    let addr = metrics_addr(&s);
    assert_ne!(addr, s.addr().to_string());
    let series = scrape(&c, &format!("http://{addr}/metrics"), None).await;
    assert_eq!(val(&series, "airdock_build_info{version=\"0.1.0\"}"), 1.0);
    // Nothing else there, not even the registry's API.
    let r = c
        .get(format!("http://{addr}/v2/"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The main port still wants an admin.
    let r = c.get(s.url("/metrics")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// The JSON log lines of `s` (every line but the two address lines on stdout must be one).
fn json_lines(s: &Server) -> Vec<Value> {
    s.logs()
        .lines()
        .filter(|l| !l.starts_with("listening on ") && !l.starts_with("metrics served on "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Wait until a log line matches `pred` (lines are written when a response body ends,
/// which may be just after the client has read it).
fn wait_line(s: &Server, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = json_lines(s).into_iter().find(|v| pred(v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} line in:\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The audit line of request `id`, and its action, user and result.
fn audit_of(s: &Server, id: &str) -> (Value, [String; 3]) {
    let line = wait_line(s, "audit", |v| {
        v["target"] == "airdock::audit" && v["request_id"] == id
    });
    let field = |k: &str| line[k].as_str().unwrap_or_default().to_owned();
    let summary = [field("action"), field("user"), field("result")];
    (line, summary)
}

#[tokio::test]
async fn json_access_and_audit_lines_and_request_ids() {
    let dir = scratch_dir("airdock-obs-");
    let s = auth_server(dir.path(), &["--log-format", "json"]);
    let c = client();
    let alice = basic("alice", "alice-pw");

    // A sane client id is echoed and logged; the access line has every field.
    let r = c
        .get(s.url("/v2/"))
        .header("authorization", &alice)
        .header("x-request-id", "it-req-1")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-request-id"], "it-req-1");
    let line = wait_line(&s, "access", |v| v["request_id"] == "it-req-1");
    assert_eq!(line["target"], "airdock::access");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/v2/");
    assert_eq!(line["status"], 200);
    assert_eq!(line["user"], "alice");
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["bytes_in"], 0);
    assert!(line["bytes_out"].as_u64().is_some(), "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert!(line["timestamp"].is_string(), "{line}");

    // An insane id (too long, or with a space) is replaced; none at all gets one too.
    for bad in [Some("x".repeat(200)), Some("two words".to_owned()), None] {
        let mut req = c.get(s.url("/v2/"));
        if let Some(b) = &bad {
            req = req.header("x-request-id", b);
        }
        let r = req.send().await.expect("get");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "anonymous");
        let id = r.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{bad:?} → {id}"
        );
        let line = wait_line(&s, "access", |v| v["request_id"] == id.as_str());
        assert_eq!(
            (line["status"].as_u64(), line["user"].as_str()),
            (Some(401), Some("-"))
        );
    }

    // A delete: one audit line naming who, what and the result.
    push_image(&c, &s, "lab/app", "v1", &alice, 100).await;
    let r = c
        .delete(s.url("/v2/lab/app/manifests/v1"))
        .header("authorization", &alice)
        .header("x-request-id", "it-delete")
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (audit, summary) = audit_of(&s, "it-delete");
    assert_eq!(summary, ["delete_tag", "alice", "ok"]);
    assert_eq!(audit["resource"], "lab/app:v1");
    assert_eq!(audit["user"], "alice");
    assert_eq!(audit["result"], "ok");
    assert_eq!(audit["status"], 202);
    assert_eq!(audit["client"], "127.0.0.1");

    // An import (with the admin token) and a refused one by a non-admin.
    let r = c
        .post(s.url("/admin/v1/import?repository=lab/imported"))
        .bearer_auth(TOKEN)
        .header("x-request-id", "it-import")
        .body(fixture_tar("multi-image"))
        .send()
        .await
        .expect("import");
    assert_eq!(r.status(), StatusCode::CREATED);
    let (audit, summary) = audit_of(&s, "it-import");
    assert_eq!(summary, ["import", "admin-token", "ok"]);
    assert_eq!(audit["resource"], "lab/imported");
    let r = c
        .post(s.url("/admin/v1/gc"))
        .header("authorization", basic("bob", "bob-pw"))
        .header("x-request-id", "it-gc-bob")
        .send()
        .await
        .expect("gc");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, summary) = audit_of(&s, "it-gc-bob");
    assert_eq!(summary, ["gc", "bob", "refused"]);

    // The 401 challenge before a login is no refusal at info (nor an audit entry, for an
    // anonymous delete), and a failed login names the address and the user.
    let r = c
        .delete(s.url("/v2/lab/app/manifests/v2"))
        .header("x-request-id", "it-anon-delete")
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(s.url("/v2/"))
        .header("authorization", basic("mallory", "guess"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let failed = wait_line(&s, "failed login", |v| v["message"] == "failed login");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["user"], "mallory");
    assert_eq!(failed["client"], "127.0.0.1");
    wait_line(&s, "access", |v| v["request_id"] == "it-anon-delete");
    let lines = json_lines(&s);
    let challenged = ["/v2/", "/v2/lab/app/manifests/v2"];
    let refusals: Vec<&Value> = lines
        .iter()
        .filter(|v| v["message"] == "refused" || v["message"] == "challenged")
        .collect();
    assert!(
        !refusals
            .iter()
            .any(|v| challenged.iter().any(|p| v["path"] == *p)),
        "challenges logged as refusals: {refusals:?}"
    );
    // A real refusal is.
    assert!(
        refusals.iter().any(|v| v["path"] == "/admin/v1/gc"),
        "{refusals:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|v| v["target"] == "airdock::audit" && v["request_id"] == "it-anon-delete"),
        "the challenge of an anonymous delete is no audit entry at info"
    );
}
