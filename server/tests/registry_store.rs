//! Plans and applies, and the durable store: persistence and audit across
//! reopen, optimistic concurrency, incremental changes, and startup with a
//! damaged or invalid registry file or audit log.

use std::path::Path;
use std::sync::{Arc, Barrier};
use tessera_server::registry::{
    plan, ApplyError, FeatureDiff, GroupDiff, Registry, RegistryStore, SettingChange, Spec,
    StoreError, AUDIT_FILE, REGISTRY_FILE,
};
use xxhash_rust::xxh3::xxh3_64;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/news_feed/registry.toml"
);

fn example_text() -> String {
    std::fs::read_to_string(EXAMPLE).expect("example spec")
}

fn spec(text: &str) -> Spec {
    Spec::parse([("registry.toml", text)]).expect("spec parses")
}

/// The example with, in `user_features`: ttl 30d -> 60d, `sessions_7d`
/// deprecated, `ctr_1h` described anew, and `clicks_90d` added.
fn evolved_text() -> String {
    example_text()
        .replacen("ttl = \"30d\"", "ttl = \"60d\"", 1)
        .replace(
            "name = \"sessions_7d\"\ntype = \"int64\"\n",
            "name = \"sessions_7d\"\ntype = \"int64\"\nstatus = \"deprecated\"\n",
        )
        .replacen(
            "description = \"click-through rate over the last hour\"",
            "description = \"clicks per article shown, last hour\"",
            1,
        )
        .replace(
            "[[group]]\nname = \"article_features\"",
            "[[group.feature]]\nname = \"clicks_90d\"\ntype = \"int64\"\n\n[[group]]\nname = \"article_features\"",
        )
}

/// `evolved_text` with `sessions_7d` removed.
fn removed_text() -> String {
    evolved_text().replace(
        "[[group.feature]]\nname = \"sessions_7d\"\ntype = \"int64\"\nstatus = \"deprecated\"\ndescription = \"sessions in the last 7 days\"\n",
        "",
    )
}

fn applied(registry: &Registry, text: &str) -> Registry {
    let plan = plan(registry, &spec(text)).expect("valid");
    registry.apply(&plan).expect("apply")
}

#[test]
fn the_example_plans_two_entities_and_two_groups() {
    let plan = plan(&Registry::empty(), &spec(&example_text())).expect("valid");
    assert_eq!(plan.base_version, 0);
    assert_eq!(plan.entities.len(), 2);
    let added: Vec<(&str, u32, usize)> = plan
        .groups
        .iter()
        .map(|g| match g {
            GroupDiff::Added(g) => (g.name.as_str(), g.table_id, g.features.len()),
            GroupDiff::Changed(c) => panic!("unexpected change {c}"),
        })
        .collect();
    assert_eq!(
        added,
        [("article_features", 1, 23), ("user_features", 2, 23)]
    );
    let text = plan.to_string();
    assert!(text.starts_with(
        "registry version 0 -> 1\n+ entity articles (article_id int64)\n+ entity users (user_id int64)\n\
         + group article_features (table 1, entity articles, schema version 1)\n    + feature views_10m int64 nullable (id 0)"
    ), "{text}");
    let registry = Registry::empty().apply(&plan).expect("apply");
    let users = registry.group("user_features").expect("group");
    let ids: Vec<u32> = users.features.iter().map(|f| f.id).collect();
    assert_eq!(ids, (0..23).collect::<Vec<_>>());
    assert_eq!(users.table_options().ttl_us, Some(30 * 86_400 * 1_000_000));
    assert_eq!(
        users.table_options().retention_us,
        Some(365 * 86_400 * 1_000_000)
    );
}

#[test]
fn a_plan_lists_each_kind_of_change_and_apply_touches_only_that_group() {
    let v1 = applied(&Registry::empty(), &example_text());
    let plan = plan(&v1, &spec(&evolved_text())).expect("valid");
    assert_eq!(
        plan.to_string(),
        "registry version 1 -> 2\n\
         ~ group user_features (table 2, schema version 1 -> 2)\n    \
         ttl 30d -> 60d\n    \
         ~ feature sessions_7d: deprecated: status active -> deprecated\n    \
         ~ feature ctr_1h: described: description \"click-through rate over the last hour\" -> \"clicks per article shown, last hour\"\n    \
         + feature clicks_90d int64 nullable (id 23)"
    );
    let [GroupDiff::Changed(changes)] = plan.groups.as_slice() else {
        panic!("one changed group expected: {plan:?}");
    };
    assert_eq!(
        changes.settings,
        [SettingChange::Ttl {
            from: 30 * 86_400,
            to: 60 * 86_400
        }]
    );
    let kinds: Vec<&str> = changes.features.iter().map(FeatureDiff::kind).collect();
    assert_eq!(kinds, ["deprecated", "described", "added"]);

    let v2 = v1.apply(&plan).expect("apply");
    assert_eq!(v2.version(), 2);
    let (old, new) = (
        v1.group("user_features").expect("v1"),
        v2.group("user_features").expect("v2"),
    );
    assert_eq!((old.schema_version, new.schema_version), (1, 2));
    assert_eq!(
        new.feature("clicks_90d").map(|f| (f.id, f.added_in)),
        Some((23, 2))
    );
    assert_eq!(new.ttl_seconds, 60 * 86_400);
    // The untouched group and entities are the very same objects.
    assert!(Arc::ptr_eq(
        v1.group("article_features").expect("v1"),
        v2.group("article_features").expect("v2")
    ));
    assert!(Arc::ptr_eq(
        v1.entity("users").expect("v1"),
        v2.entity("users").expect("v2")
    ));

    let removal = plan_of(&v2, &removed_text());
    assert_eq!(
        removal.to_string(),
        "registry version 2 -> 3\n~ group user_features (table 2, schema version 2 -> 3)\n    - feature sessions_7d: removed"
    );
    let v3 = v2.apply(&removal).expect("apply");
    let users = v3.group("user_features").expect("v3");
    assert!(users.feature("sessions_7d").is_none());
    let gone = &users.removed[0];
    assert_eq!(
        (gone.name.as_str(), gone.id, gone.added_in, gone.removed_in),
        ("sessions_7d", 8, 1, 3)
    );

    let again = plan_of(&v3, &removed_text());
    assert!(again.is_empty());
    assert_eq!(again.to_string(), "no changes (registry version 3)");
}

fn plan_of(registry: &Registry, text: &str) -> tessera_server::registry::Plan {
    plan(registry, &spec(text)).expect("valid")
}

#[test]
fn entity_descriptions_change_in_place() {
    let v1 = applied(&Registry::empty(), &example_text());
    let text = example_text().replace("A reader of the news feed.", "Someone who reads the feed.");
    assert_eq!(
        plan_of(&v1, &text).to_string(),
        "registry version 1 -> 2\n~ entity users: description \"A reader of the news feed.\" -> \"Someone who reads the feed.\""
    );
}

#[test]
fn a_plan_applies_only_to_its_base_version() {
    let v1 = applied(&Registry::empty(), &example_text());
    let stale = plan(&Registry::empty(), &spec(&example_text())).expect("valid");
    let err = v1.apply(&stale).expect_err("stale");
    assert!(
        matches!(
            err,
            ApplyError::Stale {
                expected: 0,
                current: 1
            }
        ),
        "{err}"
    );
}

#[test]
fn registry_and_audit_persist_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, plans) = {
        let store = RegistryStore::open(dir.path()).expect("open");
        assert_eq!(store.registry().version(), 0);
        let first = store
            .apply(&spec(&example_text()), 0, "alice")
            .expect("apply");
        let second = store
            .apply(&spec(&evolved_text()), 1, "bob")
            .expect("apply");
        assert_eq!(second.registry.version(), 2);
        (store.registry(), [first.plan, second.plan])
    };
    let store = RegistryStore::open(dir.path()).expect("reopen");
    assert_eq!(*store.registry(), *registry);
    let history = store.history().expect("history");
    let summary: Vec<(u64, &str)> = history
        .iter()
        .map(|r| (r.version, r.identity.as_str()))
        .collect();
    assert_eq!(summary, [(1, "alice"), (2, "bob")]);
    assert_eq!(history[0].plan, plans[0]);
    assert_eq!(history[1].plan, plans[1]);
    assert!(history[0].time_us > 1_600_000_000_000_000 && history[0].time_us <= history[1].time_us);
}

#[test]
fn a_stale_apply_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RegistryStore::open(dir.path()).expect("open");
    store
        .apply(&spec(&example_text()), 0, "alice")
        .expect("apply");
    let err = store
        .apply(&spec(&evolved_text()), 0, "bob")
        .expect_err("stale");
    assert_eq!(
        err.to_string(),
        "the registry is at version 1 but the change expected version 0: another change was applied first; plan again against version 1"
    );
    assert_eq!(store.registry().version(), 1);
    assert_eq!(store.history().expect("history").len(), 1);
}

#[test]
fn of_two_concurrent_applies_from_one_version_exactly_one_lands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RegistryStore::open(dir.path()).expect("open");
    store
        .apply(&spec(&example_text()), 0, "setup")
        .expect("apply");
    let barrier = Barrier::new(2);
    let texts = [
        evolved_text(),
        example_text().replace("ttl = \"7d\"", "ttl = \"14d\""),
    ];
    let results: Vec<Result<_, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    store.apply(&spec(text), 1, &format!("writer{i}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let landed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(landed, 1, "{results:?}");
    let stale = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("one error");
    assert!(
        matches!(
            stale,
            StoreError::Apply(ApplyError::Stale {
                expected: 1,
                current: 2
            })
        ),
        "{stale}"
    );
    assert_eq!(store.registry().version(), 2);
    assert_eq!(store.history().expect("history").len(), 2);
}

#[test]
fn an_invalid_spec_or_no_change_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RegistryStore::open(dir.path()).expect("open");
    store
        .apply(&spec(&example_text()), 0, "alice")
        .expect("apply");
    let bad = example_text().replace("type = \"embedding(64)\"", "type = \"embedding(32)\"");
    let err = store.apply(&spec(&bad), 1, "bob").expect_err("invalid");
    assert!(matches!(err, StoreError::Validation(_)), "{err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with("the spec was not applied: 2 problems:\n"),
        "{shown}"
    );
    assert!(shown.contains("\n  registry.toml: group `user_features`, feature `user_embedding`: changing an embedding's dimension in place is forbidden (64 -> 32)"), "{shown}");
    let same = store
        .apply(&spec(&example_text()), 1, "carol")
        .expect("no-op");
    assert!(same.plan.is_empty());
    assert_eq!(store.registry().version(), 1);
    assert_eq!(store.history().expect("history").len(), 1);
}

/// A store directory with two applied changes.
fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RegistryStore::open(dir.path()).expect("open");
    store
        .apply(&spec(&example_text()), 0, "alice")
        .expect("apply");
    store
        .apply(&spec(&evolved_text()), 1, "bob")
        .expect("apply");
    dir
}

fn open_err(dir: &Path) -> String {
    match RegistryStore::open(dir) {
        Ok(_) => panic!("{} must be refused", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).expect("read");
    f(&mut bytes);
    std::fs::write(path, bytes).expect("write");
}

/// A way to damage a file's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn a_damaged_registry_file_refuses_startup_naming_file_and_offset() {
    let dir = populated();
    let path = dir.path().join(REGISTRY_FILE);
    let good = std::fs::read(&path).expect("read");
    let len = good.len();
    let cases: [(&str, Damage, String); 6] = [
        (
            "magic",
            Box::new(|b| b[0] ^= 0xFF),
            "at offset 0: bad magic: not a registry file".into(),
        ),
        (
            "version",
            Box::new(|b| b[4] = 9),
            "at offset 4: unknown format version Some(9); this build reads version 1".into(),
        ),
        (
            "length",
            Box::new(|b| b[8] ^= 1),
            "at offset 8: body length is".into(),
        ),
        (
            "body",
            Box::new(move |b| b[len / 2] ^= 0x20),
            format!(
                "checksum mismatch in {} at offset {}",
                path.display(),
                len - 8
            ),
        ),
        (
            "truncated",
            Box::new(move |b| b.truncate(len - 3)),
            "at offset 8: body length is".into(),
        ),
        (
            "stub",
            Box::new(|b| b.truncate(10)),
            "at offset 0: file is 10 bytes, shorter than the 24 of an empty registry file".into(),
        ),
    ];
    for (what, damage, expected) in cases {
        edit(&path, |b| {
            b.clone_from(&good);
            damage(b);
        });
        let err = open_err(dir.path());
        assert!(err.contains(&path.display().to_string()), "{what}: {err}");
        assert!(
            err.contains(&expected),
            "{what}: {err}\nexpected: {expected}"
        );
    }
}

#[test]
fn moving_a_damaged_registry_file_aside_rebuilds_it_from_the_audit_log() {
    let dir = populated();
    let before = RegistryStore::open(dir.path()).expect("open").registry();
    let path = dir.path().join(REGISTRY_FILE);
    edit(&path, |b| b[30] ^= 0x01);
    open_err(dir.path());
    std::fs::rename(&path, dir.path().join("REGISTRY.damaged")).expect("move aside");
    let store = RegistryStore::open(dir.path()).expect("rebuilt");
    assert_eq!(*store.registry(), *before);
    assert!(path.exists(), "the registry file is rewritten");
}

/// Rewrites the registry file's JSON body, with a valid checksum.
fn rewrite_body(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).expect("read");
    let mut body: serde_json::Value =
        serde_json::from_slice(&bytes[16..bytes.len() - 8]).expect("json");
    f(&mut body);
    let json = serde_json::to_vec(&body).expect("json");
    let mut out = Vec::new();
    out.extend_from_slice(b"TSRG");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    let checksum = xxh3_64(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    std::fs::write(path, out).expect("write");
}

#[test]
fn a_registry_file_that_decodes_but_breaks_rules_refuses_startup() {
    let dir = populated();
    let path = dir.path().join(REGISTRY_FILE);
    rewrite_body(&path, |body| {
        body["groups"][1]["ttl_seconds"] = 0.into();
        let article_table = body["groups"][0]["table_id"].clone();
        body["groups"][1]["table_id"] = article_table;
    });
    let file = path.display().to_string();
    assert_eq!(
        open_err(dir.path()),
        format!(
            "registry in {file} fails validation: 2 problems:\n  \
             {file}: group `user_features`: table id 1 belongs to two groups\n  \
             {file}: group `user_features`: ttl must be positive; found 0d"
        )
    );
}

#[test]
fn a_damaged_audit_log_refuses_startup_naming_file_and_offset() {
    let dir = populated();
    let path = dir.path().join(AUDIT_FILE);
    let good = std::fs::read(&path).expect("read");
    edit(&path, |b| b[40] ^= 0x01); // inside the first record's payload
    let err = open_err(dir.path());
    assert!(
        err.starts_with(&format!(
            "checksum mismatch in {} at offset 16:",
            path.display()
        )),
        "{err}"
    );
    edit(&path, |b| {
        b.clone_from(&good);
        b[0] = b'X';
    });
    let err = open_err(dir.path());
    assert_eq!(
        err,
        format!(
            "corruption in {} at offset 0: bad header: not an audit log of format version 1",
            path.display()
        )
    );
}

#[test]
fn a_torn_last_audit_record_is_dropped() {
    let dir = populated();
    let path = dir.path().join(AUDIT_FILE);
    let good_len = std::fs::metadata(&path).expect("stat").len();
    // An append cut short: a length promising more bytes than follow.
    edit(&path, |b| {
        b.extend_from_slice(&500u32.to_le_bytes());
        b.extend_from_slice(&[7; 8]);
        b.extend_from_slice(b"{\"version\":3");
    });
    let store = RegistryStore::open(dir.path()).expect("open");
    assert_eq!(store.registry().version(), 2);
    assert_eq!(store.history().expect("history").len(), 2);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), good_len);
    // The log takes appends again.
    store
        .apply(&spec(&removed_text()), 2, "carol")
        .expect("apply");
    drop(store);
    assert_eq!(
        RegistryStore::open(dir.path())
            .expect("reopen")
            .registry()
            .version(),
        3
    );
}

#[test]
fn a_checkpoint_behind_the_log_is_caught_up_by_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RegistryStore::open(dir.path()).expect("open");
    store
        .apply(&spec(&example_text()), 0, "alice")
        .expect("apply");
    let registry_file = dir.path().join(REGISTRY_FILE);
    let version_one = std::fs::read(&registry_file).expect("read");
    store
        .apply(&spec(&evolved_text()), 1, "bob")
        .expect("apply");
    let expected = store.registry();
    drop(store);
    // As if the process died after the audit append, before the checkpoint.
    std::fs::write(&registry_file, version_one).expect("write");
    let store = RegistryStore::open(dir.path()).expect("replayed");
    assert_eq!(*store.registry(), *expected);
    drop(store);
    // The checkpoint was rewritten at version 2.
    std::fs::remove_file(dir.path().join(AUDIT_FILE)).expect("remove log");
    let log = dir.path().join(AUDIT_FILE);
    assert_eq!(
        open_err(dir.path()),
        format!("corruption in {} at offset 0: the audit log is missing but the registry file is at version 2", log.display())
    );
    assert!(!log.exists(), "a refused start creates nothing");
}

/// Byte positions to damage in a file of `len` bytes: the first and last
/// 64 bytes, and every 13th byte between.
fn positions(len: usize) -> impl Iterator<Item = usize> {
    (0..len).filter(move |&i| i < 64 || i + 64 >= len || i % 13 == 0)
}

#[test]
fn no_single_flipped_byte_in_either_file_goes_unnoticed() {
    let dir = populated();
    let mut flips = 0;
    for name in [REGISTRY_FILE, AUDIT_FILE] {
        let path = dir.path().join(name);
        let good = std::fs::read(&path).expect("read");
        for at in positions(good.len()) {
            flips += 1;
            edit(&path, |b| {
                b.clone_from(&good);
                b[at] ^= 0x10;
            });
            assert!(
                RegistryStore::open(dir.path()).is_err(),
                "{name}: flip at {at} was not detected"
            );
            let mut damaged = good.clone();
            damaged[at] ^= 0x10;
            assert!(
                std::fs::read(&path).expect("read") == damaged,
                "{name}: a refused start changed the file"
            );
        }
        std::fs::write(&path, &good).expect("restore");
    }
    println!("registry bit rot: {flips} flips, {flips} detected");
    assert_eq!(
        RegistryStore::open(dir.path())
            .expect("intact")
            .registry()
            .version(),
        2
    );
}
