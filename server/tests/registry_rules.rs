//! Every validation rule, each with a spec that breaks it and the exact
//! message it must produce (naming the file, and the entity, group and
//! feature concerned). Also: every problem of a spec is reported at once.

use tessera_server::registry::{plan, Registry, Spec};

const USERS: &str = r#"
[[entity]]
name = "users"
keys = [{ name = "user_id", type = "int64" }]
"#;

const GROUP: &str = r#"
[[group]]
name = "g"
entity = "users"
ttl = "1d"
retention = "7d"
owner = "feed"
"#;

/// The registry the evolution rules start from: group `g` with an int64
/// `a`, an embedding `e`, a deprecated `d` and a non-nullable `r`; then `d`
/// removed and `x` added.
fn base() -> Registry {
    let v1 = features(&[
        ("a", "int64", ""),
        ("e", "embedding(4)", ""),
        ("d", "float64", "status = \"deprecated\""),
        ("r", "int64", "nullable = false"),
    ]);
    let v2 = features(&[
        ("a", "int64", ""),
        ("e", "embedding(4)", ""),
        ("r", "int64", "nullable = false"),
    ]);
    let mut registry = Registry::empty();
    for text in [v1, v2] {
        let spec = Spec::parse([("spec.toml", format!("{USERS}{GROUP}{text}"))]).expect("parse");
        let plan = plan(&registry, &spec).expect("valid");
        registry = registry.apply(&plan).expect("apply");
    }
    registry
}

fn features(list: &[(&str, &str, &str)]) -> String {
    list.iter()
        .map(|(name, ty, extra)| {
            format!("[[group.feature]]\nname = \"{name}\"\ntype = \"{ty}\"\n{extra}\n")
        })
        .collect()
}

/// The problems of `files` applied to `current`, as displayed.
fn problems_in(current: &Registry, files: &[(&str, &str)]) -> Vec<String> {
    let result = Spec::parse(files.iter().copied()).and_then(|spec| plan(current, &spec));
    let err = result.expect_err("the spec must be refused");
    err.problems.iter().map(ToString::to_string).collect()
}

/// Asserts that `text` (one file, `spec.toml`) has exactly `expected`.
fn assert_problems(current: &Registry, text: &str, expected: &[&str]) {
    assert_eq!(
        problems_in(current, &[("spec.toml", text)]),
        expected,
        "spec:\n{text}"
    );
}

fn with_features(list: &[(&str, &str, &str)]) -> String {
    format!("{USERS}{GROUP}{}", features(list))
}

#[test]
fn the_base_spec_is_valid() {
    assert_eq!(base().group("g").expect("g").schema_version, 2);
}

#[test]
fn malformed_toml_names_the_file() {
    let problems = problems_in(&Registry::empty(), &[("news.toml", "[[group]\n")]);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].starts_with("news.toml: TOML parse error at line 1"),
        "{problems:?}"
    );
}

#[test]
fn unknown_fields_are_refused() {
    let text = format!("{USERS}{GROUP}colour = \"red\"\n");
    let problems = problems_in(&Registry::empty(), &[("spec.toml", &text)]);
    assert!(
        problems[0].contains("unknown field `colour`"),
        "{problems:?}"
    );
}

#[test]
fn unknown_types() {
    let empty = Registry::empty();
    assert_problems(
        &empty,
        &with_features(&[("a", "int128", "")]),
        &[
            "spec.toml: group `g`, feature `a`: unknown type `int128`; the types are bool, int32, \
           int64, float32, float64, string, bytes, timestamp, embedding(DIM), list<int64>, \
           list<float32>, list<string>",
        ],
    );
    assert_problems(
        &empty,
        &with_features(&[("a", "embedding(0)", "")]),
        &["spec.toml: group `g`, feature `a`: embedding dimension `0` must be a whole number from 1 to 4096"],
    );
    let text = format!(
        "[[entity]]\nname = \"users\"\nkeys = [{{ name = \"user_id\", type = \"float64\" }}]\n{GROUP}{}",
        features(&[("a", "int64", "")])
    );
    assert_problems(
        &empty,
        &text,
        &["spec.toml: entity `users`: key column `user_id`: unknown key type `float64`; key columns are int64 or string"],
    );
}

#[test]
fn bad_names() {
    let text = r#"
[[entity]]
name = "Users"
keys = [{ name = "user-id", type = "int64" }]

[[group]]
name = "9g"
entity = "Users"
ttl = "1d"
retention = "1d"
owner = "feed"
tags = ["News Feed"]

[[group.feature]]
name = "clicksPerHour"
type = "int64"
"#;
    assert_problems(
        &Registry::empty(),
        text,
        &[
            "spec.toml: entity `Users`: `Users` is not a valid entity name: names match [a-z][a-z0-9_]{0,62}",
            "spec.toml: entity `Users`: `user-id` is not a valid key column name: names match [a-z][a-z0-9_]{0,62}",
            "spec.toml: group `9g`: `9g` is not a valid group name: names match [a-z][a-z0-9_]{0,62}",
            "spec.toml: group `9g`: `News Feed` is not a valid tag name: names match [a-z][a-z0-9_]{0,62}",
            "spec.toml: group `9g`, feature `clicksPerHour`: `clicksPerHour` is not a valid feature name: names match [a-z][a-z0-9_]{0,62}",
        ],
    );
}

#[test]
fn bad_status_and_durations_and_missing_fields() {
    let text = format!(
        "{USERS}[[group]]\nname = \"g\"\nttl = \"1 day\"\n{}",
        features(&[("a", "int64", "status = \"retired\"")])
    );
    assert_problems(
        &Registry::empty(),
        &text,
        &[
            "spec.toml: group `g`: `entity` is required: the entity whose key identifies each row",
            "spec.toml: group `g`: `owner` is required: who to ask about the group",
            "spec.toml: group `g`: ttl: `1 day` is not a duration: write a whole number and a unit (s, m, h or d), e.g. `7d`",
            "spec.toml: group `g`: `retention` is required, e.g. retention = \"30d\"",
            "spec.toml: group `g`, feature `a`: unknown status `retired`; a status is active or deprecated",
        ],
    );
}

#[test]
fn duplicates() {
    let first = format!(
        "{USERS}{GROUP}{}",
        features(&[("a", "int64", ""), ("a", "float64", "")])
    );
    let second = format!("{USERS}{GROUP}{}", features(&[("b", "int64", "")])).replace(
        "user_id\", type = \"int64\" }]",
        "user_id\", type = \"int64\" }, { name = \"user_id\", type = \"string\" }]",
    );
    let problems = problems_in(
        &Registry::empty(),
        &[("one.toml", &first), ("two.toml", &second)],
    );
    assert_eq!(
        problems,
        [
            "one.toml: group `g`, feature `a`: feature is declared twice in the group",
            "two.toml: entity `users`: key column `user_id` is declared twice",
            "two.toml: entity `users`: entity is declared more than once (also in one.toml)",
            "two.toml: group `g`: group is declared more than once (also in one.toml)",
        ]
    );
}

#[test]
fn limits() {
    let empty = Registry::empty();
    let no_features = format!("{USERS}{GROUP}");
    assert_problems(
        &empty,
        &no_features,
        &["spec.toml: group `g`: a group has 1 to 1024 features; found 0"],
    );

    let many: Vec<(String, &str, &str)> =
        (0..1025).map(|i| (format!("f{i}"), "bool", "")).collect();
    let many: Vec<(&str, &str, &str)> = many.iter().map(|(n, t, e)| (n.as_str(), *t, *e)).collect();
    assert_problems(
        &empty,
        &with_features(&many),
        &["spec.toml: group `g`: a group has 1 to 1024 features; found 1025"],
    );

    let keyless = format!(
        "[[entity]]\nname = \"users\"\n{GROUP}{}",
        features(&[("a", "int64", "")])
    );
    assert_problems(
        &empty,
        &keyless,
        &["spec.toml: entity `users`: an entity has 1 to 4 key columns; found 0"],
    );

    let wide: Vec<(String, &str, &str)> = (0..5)
        .map(|i| (format!("e{i}"), "embedding(4096)", ""))
        .collect();
    let wide: Vec<(&str, &str, &str)> = wide.iter().map(|(n, t, e)| (n.as_str(), *t, *e)).collect();
    assert_problems(
        &empty,
        &with_features(&wide),
        &["spec.toml: group `g`: fixed-width features take 81920 bytes per row; the limit is 65536"],
    );

    let long = "x".repeat(1025);
    let described = with_features(&[("a", "int64", &format!("description = \"{long}\""))]);
    assert_problems(
        &empty,
        &described,
        &["spec.toml: group `g`, feature `a`: description is 1025 bytes; the limit is 1024"],
    );
}

#[test]
fn lifetimes() {
    let empty = Registry::empty();
    let spec = |ttl: &str, retention: &str| {
        with_features(&[("a", "int64", "")])
            .replace("ttl = \"1d\"", &format!("ttl = \"{ttl}\""))
            .replace(
                "retention = \"7d\"",
                &format!("retention = \"{retention}\""),
            )
    };
    assert_problems(
        &empty,
        &spec("0s", "7d"),
        &["spec.toml: group `g`: ttl must be positive; found 0d"],
    );
    assert_problems(
        &empty,
        &spec("-1d", "-1d"),
        &[
            "spec.toml: group `g`: ttl must be positive; found -1d",
            "spec.toml: group `g`: retention must be positive; found -1d",
        ],
    );
    assert_problems(
        &empty,
        &spec("30d", "7d"),
        &["spec.toml: group `g`: retention (7d) must be at least the ttl (30d): a value must not be deleted while it can still be served"],
    );
    assert_problems(
        &empty,
        &spec("1d", "36601d"),
        &["spec.toml: group `g`: retention is 36601d; the limit is 36600d"],
    );
}

#[test]
fn cross_object_rules() {
    let empty = Registry::empty();
    let unknown =
        with_features(&[("a", "int64", "")]).replace("entity = \"users\"", "entity = \"readers\"");
    assert_problems(
        &empty,
        &unknown,
        &["spec.toml: group `g`: entity `readers` is not declared in the spec"],
    );

    // The entity may be declared in another file of the same spec.
    let group_only = format!("{GROUP}{}", features(&[("a", "int64", "")]));
    assert!(Spec::parse([
        ("entities.toml", USERS),
        ("groups.toml", group_only.as_str())
    ])
    .and_then(|spec| plan(&empty, &spec))
    .is_ok());

    assert_problems(
        &empty,
        &with_features(&[("user_id", "int64", "")]),
        &["spec.toml: group `g`, feature `user_id`: has the name of a key column of entity `users`; key columns are not features"],
    );
}

#[test]
fn in_place_changes_are_forbidden() {
    let base = base();
    let current = [
        ("a", "int64", ""),
        ("e", "embedding(4)", ""),
        ("r", "int64", "nullable = false"),
    ];

    let mut retyped = current;
    retyped[0] = ("a", "float64", "");
    assert_problems(
        &base,
        &with_features(&retyped),
        &["spec.toml: group `g`, feature `a`: changing a feature's type in place is forbidden (int64 -> float64): add a new feature with a new name"],
    );

    let mut resized = current;
    resized[1] = ("e", "embedding(8)", "");
    assert_problems(
        &base,
        &with_features(&resized),
        &["spec.toml: group `g`, feature `e`: changing an embedding's dimension in place is forbidden (4 -> 8): add a new feature with a new name"],
    );

    let rekeyed = with_features(&current).replace("type = \"int64\" }]", "type = \"string\" }]");
    assert_problems(
        &base,
        &rekeyed,
        &["spec.toml: entity `users`: changing an entity's keys in place is forbidden ((user_id int64) -> (user_id string)): declare a new entity"],
    );

    let moved = format!(
        "{USERS}[[entity]]\nname = \"readers\"\nkeys = [{{ name = \"user_id\", type = \"int64\" }}]\n{}{}",
        GROUP.replace("entity = \"users\"", "entity = \"readers\""),
        features(&current)
    );
    assert_problems(
        &base,
        &moved,
        &["spec.toml: group `g`: changing a group's entity in place is forbidden (`users` -> `readers`): create a new group"],
    );

    let mut required = current;
    required[0] = ("a", "int64", "nullable = false");
    assert_problems(
        &base,
        &with_features(&required),
        &["spec.toml: group `g`, feature `a`: making a nullable feature non-nullable is forbidden: rows already written may hold nulls"],
    );
}

#[test]
fn removal_needs_deprecation_first() {
    let base = base();
    assert_problems(
        &base,
        &with_features(&[("e", "embedding(4)", ""), ("r", "int64", "nullable = false")]),
        &["spec.toml: group `g`, feature `a`: removing an active feature is forbidden: deprecate it first (status = \"deprecated\"), apply, then remove it"],
    );
}

#[test]
fn added_features_are_nullable_and_new_named() {
    let base = base();
    let list = [
        ("a", "int64", ""),
        ("e", "embedding(4)", ""),
        ("r", "int64", "nullable = false"),
        ("d", "float64", ""),
        ("n", "int64", "nullable = false"),
    ];
    assert_problems(
        &base,
        &with_features(&list),
        &[
            "spec.toml: group `g`, feature `d`: the name belonged to a feature removed in schema version 2; choose a new name",
            "spec.toml: group `g`, feature `n`: a feature added to an existing group must be nullable: rows written before it read as null",
        ],
    );
}

#[test]
fn entities_and_groups_cannot_disappear() {
    let base = base();
    let other =
        "[[entity]]\nname = \"articles\"\nkeys = [{ name = \"article_id\", type = \"int64\" }]\n";
    assert_problems(
        &base,
        other,
        &[
            "(spec): entity `users`: is in the registry but no spec file declares it; entities cannot be removed",
            "(spec): group `g`: is in the registry (table 1) but no spec file declares it; groups cannot be removed",
        ],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let users = format!(
        "{USERS}[[entity]]\nname = \"Bad\"\nkeys = [{{ name = \"k\", type = \"int64\" }}]\n"
    );
    let groups = format!(
        "{GROUP}{}\n[[group]]\nname = \"h\"\nentity = \"nobody\"\nttl = \"0d\"\nretention = \"1d\"\nowner = \"x\"\n{}",
        features(&[("a", "float64", ""), ("e", "embedding(4)", ""), ("r", "int64", "nullable = false")]),
        features(&[("z", "int7", "")]),
    );
    let problems = problems_in(
        &base(),
        &[("entities.toml", &users), ("groups.toml", &groups)],
    );
    assert_eq!(
        problems,
        [
            "entities.toml: entity `Bad`: `Bad` is not a valid entity name: names match [a-z][a-z0-9_]{0,62}",
            "groups.toml: group `h`, feature `z`: unknown type `int7`; the types are bool, int32, int64, \
             float32, float64, string, bytes, timestamp, embedding(DIM), list<int64>, list<float32>, list<string>",
            "groups.toml: group `h`: ttl must be positive; found 0d",
            "groups.toml: group `h`: entity `nobody` is not declared in the spec",
            "groups.toml: group `g`, feature `a`: changing a feature's type in place is forbidden (int64 -> float64): add a new feature with a new name",
        ]
    );
}
