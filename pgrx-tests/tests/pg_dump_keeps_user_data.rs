//! pg_dump / restore keeps what users added or changed in the catalog (models, aliases, price
//! versions, including the closed default versions that past costs depend on), without
//! duplicating the default catalog that CREATE EXTENSION recreates.

mod common;

use common::*;
use postgres::Client;
use std::process::Command;

/// One line per catalog row, creation timestamps excluded (CREATE EXTENSION sets them anew).
const CATALOG_ROWS_SQL: &str = "
    SELECT format('price %s|%s|%s|%s|%s|%s|%s|%s|%s', price_id, model, usage_type, service_tier,
                  threshold_tokens, usd_per_mtok, valid, origin, source) FROM aicost.prices
    UNION ALL
    SELECT format('model %s|%s|%s|%s|%s|%s|%s', model, provider, mode, max_input_tokens, source, as_of, origin)
      FROM aicost.models
    UNION ALL
    SELECT format('alias %s|%s|%s', alias, model, origin) FROM aicost.model_aliases
    ORDER BY 1";

fn catalog_rows(c: &mut Client) -> Vec<String> {
    c.query(CATALOG_ROWS_SQL, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The costs the test checks, as text: (label, cost). `$1` is an instant before the changes.
fn costs(c: &mut Client, before_change: &str) -> Vec<(String, Option<String>)> {
    let queries = [
        ("gpt-4o output before the change", "SELECT ai_cost('gpt-4o', 0, 1000000, at => $1::text::timestamptz)::text"),
        ("gpt-4o output now", "SELECT ai_cost('gpt-4o', 0, 1000000)::text"),
        ("gpt-4o input now", "SELECT ai_cost('gpt-4o', 1000000, 0)::text"),
        ("my-4o alias now", "SELECT ai_cost('my-4o', 1000000, 1000000)::text"),
        ("acme-1 now", "SELECT ai_cost('acme-1', 1000000, 1000000)::text"),
        ("acme-1 in two hours", "SELECT ai_cost('acme-1', 1000000, 1000000, at => now() + interval '2 hours')::text"),
        ("acme/acme-1 by provider prefix", "SELECT ai_cost('acme/acme-1', 1000, 0)::text"),
        (
            "claude 1h cache write before the change",
            "SELECT ai_cost('claude-sonnet-4-6', 10000, 100, 1000, 2000, at => $1::text::timestamptz,
                            cache_write_1h_tokens => 3000)::text",
        ),
    ];
    labelled_values(c, &queries, before_change)
}

fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{stderr}",
        out.status
    );
    stderr
}

fn price_row_count(c: &mut Client) -> i64 {
    one_row(c, "SELECT count(*) FROM aicost.prices", &[]).get(0)
}

/// Current (open-ended) versions per price key: more than one would be a duplicated default row.
fn duplicated_keys(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT format('%s %s %s %s x%s', model, usage_type, service_tier, threshold_tokens, count(*))
           FROM aicost.prices WHERE upper_inf(valid)
          GROUP BY model, usage_type, service_tier, threshold_tokens HAVING count(*) > 1 ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn diff(a: &[String], b: &[String]) -> String {
    let only_a: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
    let only_b: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
    format!("only in the original: {only_a:#?}\nonly in the restored: {only_b:#?}")
}

fn verify_restored(label: &str, src: &mut Client, dst: &mut Client, before_change: &str) {
    let (src_rows, dst_rows) = (catalog_rows(src), catalog_rows(dst));
    assert_eq!(
        price_row_count(dst),
        price_row_count(src),
        "{label}: number of price rows\n{}",
        diff(&src_rows, &dst_rows)
    );
    assert_eq!(
        duplicated_keys(dst),
        Vec::<String>::new(),
        "{label}: duplicated current price rows"
    );
    assert!(
        src_rows == dst_rows,
        "{label}: restored catalog differs\n{}",
        diff(&src_rows, &dst_rows)
    );
    assert_eq!(
        costs(dst, before_change),
        costs(src, before_change),
        "{label}: costs differ after restore"
    );
    // The price_id sequence came along: a new version gets a fresh id.
    let id: i64 = one_row(dst, "SELECT ai_price_set('acme-1', 'input', 1.75)", &[]).get(0);
    let max_src: i64 = one_row(src, "SELECT max(price_id) FROM aicost.prices", &[]).get(0);
    assert!(
        id > max_src,
        "{label}: new price_id {id} should follow the restored ones (max {max_src})"
    );
}

#[test]
fn pg_dump_keeps_user_data() {
    let src_db = TestDb::new("dump_src");
    let mut src = src_db.connect();

    let before_change: String = one_row(&mut src, "SELECT clock_timestamp()::text", &[]).get(0);
    std::thread::sleep(std::time::Duration::from_millis(5));
    exec(
        &mut src,
        "INSERT INTO aicost.models (model, provider, mode, source) VALUES ('acme-1', 'acme', 'chat', 'https://acme.example/pricing');
         SELECT ai_price_set('acme-1', 'input', 1.5);
         SELECT ai_price_set('acme-1', 'output', 6, source => 'acme list price');
         SELECT ai_price_set('acme-1', 'output', 7, effective_from => now() + interval '1 hour');
         SELECT ai_price_set('gpt-4o', 'output', 12);
         INSERT INTO aicost.model_aliases (alias, model) VALUES ('my-4o', 'gpt-4o');",
    );
    let src_costs = costs(&mut src, &before_change);
    let expect = |label: &str, v: &str| {
        let got = src_costs
            .iter()
            .find(|(l, _)| l == label)
            .unwrap()
            .1
            .clone();
        assert_eq!(got.as_deref().map(dec), Some(dec(v)), "source db: {label}");
    };
    expect("gpt-4o output before the change", "10");
    expect("gpt-4o output now", "12");
    expect("my-4o alias now", "14.5");
    expect("acme-1 now", "7.5");
    expect("acme-1 in two hours", "8.5");

    let dst_db = TestDb::empty("dump_dst_custom");
    dump_restore_custom(&src_db, &dst_db);
    let mut dst = dst_db.connect();
    verify_restored("custom format", &mut src, &mut dst, &before_change);

    let plain_db = TestDb::empty("dump_dst_plain");
    dump_restore_plain(&src_db, &plain_db);
    let mut plain = plain_db.connect();
    verify_restored("plain format", &mut src, &mut plain, &before_change);
}

/// pg_dump -Fc of `src`, pg_restore into the empty database `dst`.
fn dump_restore_custom(src: &TestDb, dst: &TestDb) {
    let conn = cli_conn_args();
    let file = std::env::temp_dir().join(format!("{}_{}.dump", src.name, std::process::id()));
    run(Command::new(pg_bin("pg_dump"))
        .args(&conn)
        .args(["-Fc", "-f"])
        .arg(&file)
        .arg(&src.name));
    let r = std::panic::catch_unwind(|| {
        run(Command::new(pg_bin("pg_restore"))
            .args(&conn)
            .args(["--exit-on-error", "-d", &dst.name])
            .arg(&file))
    });
    let _ = std::fs::remove_file(&file);
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// pg_dump -Fp of `src`, replayed with psql into the empty database `dst`.
fn dump_restore_plain(src: &TestDb, dst: &TestDb) {
    let conn = cli_conn_args();
    let file = std::env::temp_dir().join(format!("{}_{}.sql", src.name, std::process::id()));
    run(Command::new(pg_bin("pg_dump"))
        .args(&conn)
        .args(["-Fp", "-f"])
        .arg(&file)
        .arg(&src.name));
    let r = std::panic::catch_unwind(|| {
        run(Command::new(pg_bin("psql"))
            .args(&conn)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &dst.name, "-f"])
            .arg(&file))
    });
    let _ = std::fs::remove_file(&file);
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// ai_pricing_import() of an entry for a default-catalog model updates that model's row
/// (max_input_tokens, source, ...) and adds new prices: all of it must survive dump/restore.
#[test]
fn pg_dump_keeps_imported_changes_to_default_models() {
    let src_db = TestDb::new("dump_import_src");
    let mut src = src_db.connect();
    exec(
        &mut src,
        r#"SELECT ai_pricing_import('{"gpt-4o": {"litellm_provider": "openai", "mode": "chat",
              "max_input_tokens": 256000, "source": "https://example.com/my-negotiated-prices",
              "input_cost_per_token": 2.5e-06, "output_cost_per_token_flex": 5e-06,
              "aliases": ["team-4o"]}}')"#,
    );
    let r = one_row(
        &mut src,
        "SELECT max_input_tokens, source FROM aicost.models WHERE model = 'gpt-4o'",
        &[],
    );
    let (max_in, source): (Option<i64>, Option<String>) = (r.get(0), r.get(1));
    assert_eq!(max_in, Some(256_000), "the import updated the model row");
    assert_eq!(
        source.as_deref(),
        Some("https://example.com/my-negotiated-prices")
    );
    assert_eq!(
        num(
            &mut src,
            "SELECT ai_cost('team-4o', 0, 1000000, service_tier => 'flex')",
            &[]
        ),
        Some(dec("5"))
    );

    let dst_db = TestDb::empty("dump_import_dst");
    dump_restore_custom(&src_db, &dst_db);
    let mut dst = dst_db.connect();
    assert_eq!(
        num(
            &mut dst,
            "SELECT ai_cost('team-4o', 0, 1000000, service_tier => 'flex')",
            &[]
        ),
        Some(dec("5"))
    );
    let (src_rows, dst_rows) = (catalog_rows(&mut src), catalog_rows(&mut dst));
    assert!(
        src_rows == dst_rows,
        "restored catalog differs\n{}",
        diff(&src_rows, &dst_rows)
    );
}
