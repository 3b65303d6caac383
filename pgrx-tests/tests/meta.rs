//! The PGXN META.json describes the version being built and the PostgreSQL versions `make test`
//! covers (14 to 18).

mod common;

use common::repo_root;

#[test]
fn meta_json_matches_the_crate_and_the_supported_versions() {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("META.json")).expect("META.json"),
    )
    .expect("META.json is JSON");
    let cargo = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("Cargo.toml version");
    assert_eq!(meta["version"], version, "META.json version");
    assert_eq!(meta["provides"]["pg_aicost"]["version"], version);
    assert_eq!(
        meta["prereqs"]["runtime"]["requires"]["PostgreSQL"],
        ">= 14.0.0, < 19.0.0"
    );
    let run_tests = std::fs::read_to_string(repo_root().join("scripts/run-tests.sh")).unwrap();
    assert!(
        run_tests.contains("for pg in 15 14 16 17 18; do"),
        "make test runs the #[pg_test]s on 14-18, as META.json says"
    );
}
