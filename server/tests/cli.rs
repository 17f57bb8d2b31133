//! The `tessera` client commands against the real server: plan and apply
//! (with validation problems reported and nothing applied), registry
//! history, put from JSON lines, get as a table, as JSON and from a request
//! file, history, and one-line errors with a non-zero exit status.

mod common;

use common::{run_cli as tessera, TestServer, NEWS_FEED_SPEC};
use std::path::Path;
use std::process::{Command, Output};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// The news-feed spec with `from` replaced by `to`, written under `dir`.
fn edited_spec(dir: &Path, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(NEWS_FEED_SPEC).expect("spec");
    assert!(text.contains(from), "the spec has no `{from}`");
    let path = dir.join("edited.toml");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write spec");
    path.display().to_string()
}

#[test]
fn plan_apply_and_registry_history() {
    let server = TestServer::start(None);
    let plan = ok(tessera(&server, &["plan", NEWS_FEED_SPEC], None));
    assert!(plan.contains("plan against registry version 0"), "{plan}");
    assert!(plan.contains("+ group user_features"), "{plan}");
    let applied = ok(tessera(&server, &["apply", NEWS_FEED_SPEC], None));
    assert!(applied.contains("registry is now version 1"), "{applied}");
    let again = ok(tessera(&server, &["plan", NEWS_FEED_SPEC], None));
    assert!(again.contains("no changes"), "{again}");

    // Changing a feature's type in place is refused, naming the file, the
    // group and the feature; nothing is applied.
    let bad = edited_spec(
        &server.dir,
        "name = \"clicks_1h\"\ntype = \"int64\"",
        "name = \"clicks_1h\"\ntype = \"float64\"",
    );
    let out = tessera(&server, &["apply", &bad], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("edited.toml") && err.contains("user_features") && err.contains("clicks_1h"),
        "{err}"
    );
    assert!(err.starts_with("tessera: "), "{err}");
    let history = ok(tessera(&server, &["registry", "history"], None));
    assert!(
        history.contains("version 1 at") && history.contains("by local"),
        "{history}"
    );
    assert!(
        !history.contains("version 2"),
        "a refused apply left no record: {history}"
    );

    // A safe change (a new feature) applies as version 2.
    let added = edited_spec(
        &server.dir,
        "[[group.feature]]\nname = \"clicks_1h\"",
        "[[group.feature]]\nname = \"clicks_5m\"\ntype = \"int64\"\n\n[[group.feature]]\nname = \"clicks_1h\"",
    );
    let applied = ok(tessera(&server, &["apply", &added], None));
    assert!(
        applied.contains("version 2") && applied.contains("clicks_5m"),
        "{applied}"
    );
}

#[test]
fn put_get_history_and_errors() {
    let server = TestServer::start(None);
    ok(tessera(&server, &["apply", NEWS_FEED_SPEC], None));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let (t1, t2) = (now - 7_200_000_000, now - 3_600_000_000);
    let lines = format!(
        "{{\"user_id\": 42, \"event_ts\": {t1}, \"clicks_1h\": 3, \"ctr_24h\": 0.12}}\n\
         {{\"user_id\": 42, \"event_ts\": {t2}, \"clicks_1h\": 5}}\n\
         \n\
         {{\"user_id\": 7, \"event_ts\": \"2026-11-30T08:00:00Z\", \"clicks_1h\": 1}}\n"
    );
    let put = ok(tessera(
        &server,
        &["put", "--group", "user_features"],
        Some(&lines),
    ));
    assert!(put.contains("put 3 rows"), "{put}");

    let json = ok(tessera(
        &server,
        &[
            "get",
            "--group",
            "user_features",
            "--key",
            "42",
            "--key",
            "99",
            "--features",
            "clicks_1h,ctr_24h",
            "--format",
            "json",
        ],
        None,
    ));
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["clicks_1h"], 5);
    assert_eq!(
        rows[0]["ctr_24h"],
        serde_json::Value::Null,
        "the newer row has no ctr_24h"
    );
    assert_eq!(rows[1]["found"], false);

    let as_of = ok(tessera(
        &server,
        &[
            "get",
            "--group",
            "user_features",
            "--key",
            "42",
            "--features",
            "clicks_1h",
            "--as-of",
            &(t1 + 1).to_string(),
        ],
        None,
    ));
    assert!(
        as_of
            .lines()
            .any(|l| l.trim_start().starts_with("42") && l.trim_end().ends_with(" 3")),
        "{as_of}"
    );

    let request = server.dir.join("slate.json");
    std::fs::write(
        &request,
        r#"{"parts": [{"group": "user_features", "features": ["clicks_1h"], "keys": [42, [7]]},
                      {"group": "article_features", "features": ["views_1h"], "keys": [1]}]}"#,
    )
    .expect("write request");
    let slate = ok(tessera(
        &server,
        &[
            "get",
            "--request",
            &request.display().to_string(),
            "--format",
            "json",
        ],
        None,
    ));
    assert_eq!(slate.lines().count(), 3, "{slate}");
    assert!(slate.contains("\"group\":\"article_features\""), "{slate}");

    let history = ok(tessera(
        &server,
        &[
            "history",
            "--group",
            "user_features",
            "--key",
            "42",
            "--features",
            "clicks_1h",
        ],
        None,
    ));
    assert_eq!(
        history.lines().count(),
        3,
        "a header and two versions: {history}"
    );

    // Errors: one line, non-zero exit.
    for (args, stdin, needle) in [
        (
            vec!["get", "--group", "nope", "--key", "1"],
            None,
            "unknown group `nope`",
        ),
        (
            vec!["put", "--group", "user_features"],
            Some("{\"user_id\": 1, \"event_ts\": 5, \"clicks_1h\": \"x\"}\n"),
            "line 1",
        ),
        (
            vec!["put", "--group", "user_features"],
            Some("not json\n"),
            "line 1",
        ),
        (
            vec!["get", "--group", "user_features", "--key", "abc"],
            None,
            "not an int64",
        ),
    ] {
        let out = tessera(&server, &args, stdin);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let unreachable = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["stats", "--addr", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert!(!unreachable.status.success());
    assert!(stderr(&unreachable).contains("127.0.0.1:1"));
}
