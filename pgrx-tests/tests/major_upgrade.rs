//! A database with pg_aicost survives a major PostgreSQL upgrade: `pg_upgrade` from
//! `AICOST_UPGRADE_FROM` (default 15) to `AICOST_UPGRADE_TO` (default 18), and a dump of the old
//! cluster restored into a new one (the new version's `pg_dump -Fc` + `pg_restore`, and the old
//! version's plain `pg_dump` + `psql`).
//!
//! It runs its own three clusters (old, upgraded, restored) through `scripts/cluster.sh` on ports
//! 28831-28833, so it needs pg_aicost installed into both versions: `make test-upgrade` does that
//! and runs it (it is `#[ignore]`d in the `make test-it` runs, which have one version installed).

mod common;

use common::{dec, repo_root};
use postgres::{Client, Config, NoTls};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One PostgreSQL cluster managed by `scripts/cluster.sh`.
struct Cluster {
    pg: String,
    /// Its PostgreSQL's bin directory (installed once, by `pg_bin_dir`).
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    initdb_args: &'static str,
}

impl Cluster {
    fn script(&self, cmd: &str, preload: bool) {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/cluster.sh"))
            .arg(cmd)
            .env("PG", &self.pg)
            .env("PGBIN", &self.bin)
            .env("AICOST_PGPORT", self.port.to_string())
            .env("AICOST_CLUSTER_DIR", &self.dir)
            .env("AICOST_PRELOAD", if preload { "1" } else { "0" })
            .env("AICOST_INITDB_ARGS", self.initdb_args)
            .output()
            .expect("running scripts/cluster.sh");
        assert!(
            out.status.success(),
            "cluster.sh {cmd} (PostgreSQL {}, {}): {}{}",
            self.pg,
            self.dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn config(&self, db: &str) -> Config {
        let mut c = Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        c
    }

    fn connect(&self, db: &str) -> Client {
        self.config(db)
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connecting to {db} on PostgreSQL {}: {e}", self.pg))
    }

    fn conn_args(&self) -> Vec<String> {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// The bin directory of PostgreSQL `major` (installing it if needed, as `make` does).
fn pg_bin_dir(major: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/pg-install.sh"))
        .arg(major)
        .output()
        .expect("running scripts/pg-install.sh");
    assert!(
        out.status.success(),
        "pg-install.sh {major}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pg_config = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    pg_config.parent().unwrap().to_path_buf()
}

/// Runs `cmd` (a PostgreSQL program of `bin`) in `cwd`: as the `postgres` OS user when we are
/// root (the servers run as that user), with the install's own libraries (see scripts/cluster.sh).
fn run_pg(bin: &Path, program: &str, args: &[String], cwd: &Path) -> String {
    let exe = bin.join(program);
    let mut cmd = common::as_postgres(&exe);
    cmd.args(args)
        .current_dir(cwd)
        .env("LD_LIBRARY_PATH", bin.join("../lib"));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// The state of the database the test compares across the upgrade, one labelled text per query.
/// `$1` is an instant before the price changes. Nothing here changes what it reads (no cache
/// lookups: they count hits).
fn snapshot(c: &mut Client, before_change: &str) -> Vec<(String, String)> {
    let queries = [
        (
            "gpt-4o output before the change",
            "SELECT ai_cost('gpt-4o', 0, 1000000, at => $1::text::timestamptz)::text",
        ),
        (
            "gpt-4o output now",
            "SELECT ai_cost('gpt-4o', 0, 1000000)::text",
        ),
        (
            "cached and 1h cache-write tokens",
            "SELECT ai_cost('claude-sonnet-4-6', 10000, 100, 1000, 2000, cache_write_1h_tokens => 3000)::text",
        ),
        (
            "acme-1 now and in two hours",
            "SELECT ai_cost('acme-1', 1000000, 1000000)::text || ' ' || ai_cost('acme-1', 1000000, 1000000, at => now() + interval '2 hours')::text",
        ),
        ("alias", "SELECT ai_cost('my-4o', 1000000, 1000000)::text"),
        (
            "price versions",
            "SELECT string_agg(format('%s %s %s %s', model, usage_type, usd_per_mtok, upper_inf(valid)), ', ' ORDER BY model, usage_type, lower(valid)) FROM aicost.prices WHERE model IN ('acme-1', 'gpt-4o')",
        ),
        (
            "ledger",
            "SELECT format('%s rows, %s USD, ids %s', count(*), sum(cost), string_agg(usage_id::text, ',' ORDER BY usage_id)) FROM aicost.usage",
        ),
        (
            "budgets",
            "SELECT string_agg(format('%s/%s spent %s reserved %s of %s', scope, scope_id, spent, reserved, limit_usd), '; ' ORDER BY scope, scope_id) FROM aicost.budget_status",
        ),
        (
            "budget check",
            "SELECT format('%s %s', state, remaining) FROM ai_budget_check('user', 'alice', estimated_cost => 1)",
        ),
        (
            "cache stats",
            "SELECT string_agg(format('%s: %s entries, %s hits, %s misses, saved %s', namespace, entries, hits, misses, saved_usd), '; ' ORDER BY namespace) FROM aicost.cache_stats",
        ),
        (
            "tenants",
            "SELECT string_agg(format('%s %s', role, org_id), ', ' ORDER BY org_id) FROM aicost.tenants",
        ),
        ("audit", "SELECT count(*)::text FROM ai_budget_audit()"),
    ];
    common::labelled_values(c, &queries, before_change)
        .into_iter()
        .map(|(label, v)| (label, v.unwrap_or_else(|| "<null>".into())))
        .collect()
}

const REQUEST: &str = r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0}"#;
const RESPONSE: &str = r#"{"choices": [{"message": {"content": "hello"}}]}"#;

/// Everything pg_aicost keeps: a catalog with price history, an alias, a tenant, budgets with
/// spend and a held reservation, ledger rows, a cached response with a hit and a miss.
fn populate(c: &mut Client) -> String {
    c.batch_execute(
        "CREATE EXTENSION pg_aicost CASCADE;
         DO $$ BEGIN CREATE ROLE aicost_upgrade_acme NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
    )
    .unwrap();
    let before: String = c
        .query_one("SELECT clock_timestamp()::text", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(5));
    c.batch_execute(
        "INSERT INTO aicost.models (model, provider, mode, source) VALUES ('acme-1', 'acme', 'chat', 'https://acme.example/pricing');
         SELECT ai_price_set('acme-1', 'input', 1.5);
         SELECT ai_price_set('acme-1', 'output', 6);
         SELECT ai_price_set('acme-1', 'output', 7, effective_from => now() + interval '1 hour');
         SELECT ai_price_set('gpt-4o', 'output', 12);
         INSERT INTO aicost.model_aliases (alias, model) VALUES ('my-4o', 'gpt-4o');
         SELECT ai_tenant_set('aicost_upgrade_acme', 'acme');
         SELECT ai_budget_set('user', 'alice', 10);
         SELECT ai_budget_set('org', 'acme', 100);
         INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('alice', 'gpt-4o', 100000, 20000);
         INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens, cached_tokens) VALUES ('alice', 'claude-sonnet-4-6', 50000, 1000, 40000);
         INSERT INTO aicost.usage (org_id, request_id, model, in_tokens, out_tokens) VALUES ('acme', 'r1', 'acme-1', 10000, 1000);
         SELECT ai_budget_reserve('org', 'acme', 2, request_id => 'held', ttl => '1 day');",
    )
    .unwrap();
    c.execute(
        "SELECT ai_cache_put('gpt-4o', $1::text::jsonb, $2::text::jsonb, ttl => '1 day', cost => 0.25)",
        &[&REQUEST, &RESPONSE],
    )
    .unwrap();
    let hit: Option<String> = c
        .query_one(
            "SELECT ai_cache_get('openai/gpt-4o', $1::text::jsonb)::text",
            &[&REQUEST],
        )
        .unwrap()
        .get(0);
    assert!(hit.is_some(), "a hit before the upgrade");
    let miss: Option<String> = c
        .query_one("SELECT ai_cache_get('gpt-4o', '{\"other\": 1}')::text", &[])
        .unwrap()
        .get(0);
    assert!(miss.is_none());
    before
}

/// What must hold in a database after the upgrade or restore, beyond an unchanged snapshot: the
/// cache answers and counts the hit (after a restore, which carries the cache's namespaces but not
/// its contents, once the response is put again), the held reservation settles, new spend is
/// charged, and the ledger still refuses changes.
fn check_working(c: &mut Client, label: &str, cache_kept: bool) {
    let stats = |c: &mut Client| -> (i64, i64) {
        c.query_opt(
            "SELECT hits, entries FROM aicost.cache_stats WHERE namespace = 'default'",
            &[],
        )
        .unwrap()
        .map_or((0, 0), |r| (r.get(0), r.get(1)))
    };
    let get = |c: &mut Client| -> Option<serde_json::Value> {
        c.query_one(
            "SELECT ai_cache_get('gpt-4o', $1::text::jsonb)::text",
            &[&REQUEST],
        )
        .unwrap()
        .get::<_, Option<String>>(0)
        .map(|s| serde_json::from_str(&s).unwrap())
    };
    if !cache_kept {
        assert_eq!(stats(c), (0, 0), "{label}: a dump carries no cache entries");
        assert_eq!(get(c), None, "{label}: a miss");
        c.execute(
            "SELECT ai_cache_put('gpt-4o', $1::text::jsonb, $2::text::jsonb, ttl => '1 day', cost => 0.25)",
            &[&REQUEST, &RESPONSE],
        )
        .unwrap();
    }
    let (hits, entries) = stats(c);
    assert_eq!(entries, 1, "{label}: cached entries");
    assert_eq!(
        get(c),
        Some(serde_json::from_str(RESPONSE).unwrap()),
        "{label}: the cache answers"
    );
    assert_eq!(stats(c), (hits + 1, 1), "{label}: the hit is counted");

    let reserved = |c: &mut Client| -> rust_decimal::Decimal {
        c.query_one(
            "SELECT reserved FROM aicost.budget_status WHERE scope = 'org' AND scope_id = 'acme'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(reserved(c), dec("2"), "{label}: the reservation is held");
    c.batch_execute(
        "INSERT INTO aicost.usage (org_id, request_id, model, in_tokens, out_tokens) VALUES ('acme', 'held', 'acme-1', 1000000, 0)",
    )
    .unwrap();
    assert_eq!(reserved(c), dec("0"), "{label}: the reservation settled");
    let spent: rust_decimal::Decimal = c
        .query_one(
            "SELECT spent FROM aicost.budget_status WHERE scope = 'org' AND scope_id = 'acme'",
            &[],
        )
        .unwrap()
        .get(0);
    // 10000 in + 1000 out of acme-1 at 1.5/6 per Mtok, then 1M input tokens at 1.5.
    assert_eq!(spent, dec("1.521"), "{label}: org spend");
    let audit: i64 = c
        .query_one("SELECT count(*) FROM ai_budget_audit()", &[])
        .unwrap()
        .get(0);
    assert_eq!(audit, 0, "{label}: ai_budget_audit() finds no drift");
    let e = c
        .batch_execute("DELETE FROM aicost.usage")
        .expect_err("the ledger is insert-only");
    assert_eq!(
        common::code_of(&e),
        "42501",
        "{label}: deleting from the ledger: {e}"
    );
}

/// Statistics count in the upgraded cluster (per backend, or cluster-wide when preloaded).
fn check_stats(c: &mut Client, label: &str, preloaded: bool) {
    let r = c
        .query_one(
            "SELECT scope, sum(calls)::bigint FROM aicost.stat_cost GROUP BY scope",
            &[],
        )
        .unwrap_or_else(|e| panic!("{label}: stat_cost: {}", common::describe(&e)));
    let (scope, calls): (String, i64) = (r.get(0), r.get(1));
    assert_eq!(
        scope,
        if preloaded { "cluster" } else { "backend" },
        "{label}"
    );
    assert!(calls > 0, "{label}: ai_cost calls are counted");
}

/// Every entry of `got` equals `want`'s, but those labelled in `skip`.
fn assert_same(label: &str, want: &[(String, String)], got: &[(String, String)], skip: &[&str]) {
    for ((l, w), (_, g)) in want.iter().zip(got) {
        if !skip.contains(&l.as_str()) {
            assert_eq!(g, w, "{label}: {l} changed");
        }
    }
}

#[test]
#[ignore = "needs pg_aicost installed into two PostgreSQL versions: run by make test-upgrade"]
fn pg_upgrade_and_dump_restore_keep_everything() {
    let from = std::env::var("AICOST_UPGRADE_FROM").unwrap_or_else(|_| "15".into());
    let to = std::env::var("AICOST_UPGRADE_TO").unwrap_or_else(|_| "18".into());
    let base = {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/pg-dir.sh"))
            .arg(format!("major-upgrade-{from}-{to}"))
            .output()
            .unwrap();
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    // PostgreSQL 18's initdb turns data checksums on; pg_upgrade needs them as in the old cluster.
    let new_args = if to.parse::<u32>().unwrap() >= 18 {
        "--no-data-checksums"
    } else {
        ""
    };
    let (from_bin, to_bin) = (pg_bin_dir(&from), pg_bin_dir(&to));
    let old = Cluster {
        pg: from.clone(),
        bin: from_bin,
        port: 28831,
        dir: base.join("old"),
        initdb_args: "",
    };
    let new = Cluster {
        pg: to.clone(),
        bin: to_bin.clone(),
        port: 28832,
        dir: base.join("new"),
        initdb_args: new_args,
    };
    let restored = Cluster {
        pg: to.clone(),
        bin: to_bin,
        port: 28833,
        dir: base.join("restored"),
        initdb_args: "",
    };
    for c in [&old, &new, &restored] {
        if c.data().join("PG_VERSION").exists() {
            c.script("stop", false);
        }
        let _ = std::fs::remove_dir_all(&c.dir);
    }

    old.script("start", true);
    let before = {
        let mut a = old.connect("postgres");
        a.batch_execute("CREATE DATABASE app").unwrap();
        let mut c = old.connect("app");
        populate(&mut c)
    };
    let want = snapshot(&mut old.connect("app"), &before);
    assert!(
        want.iter()
            .any(|(l, v)| l == "budgets" && v.contains("alice spent 0.547 ")),
        "spend before the upgrade (0.25 + 0.24 of gpt-4o, 0.03 + 0.012 + 0.015 of claude): {want:#?}"
    );

    // Dumps of the old cluster: the new version's pg_dump (what the docs recommend) and the old one's.
    let custom = base.join("app.dump");
    let plain = base.join("app.sql");
    let mut args = old.conn_args();
    args.extend(["-Fc", "-f"].map(String::from));
    args.push(custom.display().to_string());
    args.push("app".into());
    run_pg(&new.bin, "pg_dump", &args, &base);
    let mut args = old.conn_args();
    args.extend(["-Fp", "-f"].map(String::from));
    args.push(plain.display().to_string());
    args.push("app".into());
    run_pg(&old.bin, "pg_dump", &args, &base);
    // Roles are global objects: a database dump needs them restored first (`pg_dumpall -g`).
    let globals = base.join("globals.sql");
    let mut args = old.conn_args();
    args.extend(["--globals-only", "-f"].map(String::from));
    args.push(globals.display().to_string());
    run_pg(&new.bin, "pg_dumpall", &args, &base);
    old.script("stop", false);

    // pg_upgrade, then the upgraded cluster per backend and preloaded.
    new.script("init", false);
    let upgrade_args: Vec<String> = [
        "-b".into(),
        old.bin.display().to_string(),
        "-B".into(),
        new.bin.display().to_string(),
        "-d".into(),
        old.data().display().to_string(),
        "-D".into(),
        new.data().display().to_string(),
    ]
    .to_vec();
    run_pg(&new.bin, "pg_upgrade", &upgrade_args, &new.dir);
    for preload in [false, true] {
        new.script("restart", preload);
        let label = format!("pg_upgrade {from} -> {to}, preloaded {preload}");
        let mut c = new.connect("app");
        assert_same(&label, &want, &snapshot(&mut c, &before), &[]);
        check_stats(&mut c, &label, preload);
        if preload {
            // Settling, charging and the audit through shared memory (once: it changes spend).
            check_working(&mut c, &label, true);
        }
    }
    new.script("stop", false);

    // Restores into a new cluster, preloaded.
    restored.script("start", true);
    // Without ON_ERROR_STOP: `CREATE ROLE postgres` fails, as it does in every such restore.
    let mut args = restored.conn_args();
    args.extend(["-X", "-q", "-d", "postgres", "-f"].map(String::from));
    args.push(globals.display().to_string());
    run_pg(&restored.bin, "psql", &args, &base);
    for (name, dump) in [("custom", &custom), ("plain", &plain)] {
        let db = format!("app_{name}");
        restored
            .connect("postgres")
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        let mut args = restored.conn_args();
        if name == "custom" {
            args.extend(["--exit-on-error", "-d"].map(String::from));
            args.push(db.clone());
            args.push(dump.display().to_string());
            run_pg(&restored.bin, "pg_restore", &args, &base);
        } else {
            args.extend(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"].map(String::from));
            args.push(db.clone());
            args.push("-f".into());
            args.push(dump.display().to_string());
            run_pg(&restored.bin, "psql", &args, &base);
        }
        let label = format!("{name} dump of {from} restored into {to}");
        let mut c = restored.connect(&db);
        assert_same(&label, &want, &snapshot(&mut c, &before), &["cache stats"]);
        check_working(&mut c, &label, false);
    }
    restored.script("stop", false);
    let _ = std::fs::remove_dir_all(&base);
}
