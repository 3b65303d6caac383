//! Extension upgrades: a database created at every released version and updated with
//! `ALTER EXTENSION pg_aicost UPDATE` must end up with exactly the objects of a fresh install of
//! the current version, and keep its data.
//!
//! Released install scripts are kept, unedited, in `pgrx-tests/upgrade/` (`make test-it` copies them
//! into the server's extension directory); the upgrade scripts are `sql/pg_aicost--A--B.sql`.

mod common;

use common::*;
use postgres::Client;

const RELEASED: &[&str] = &["0.1.0", "0.2.0", "0.3.0"];

/// Every object of the extension, described by its definition (not its OID), one line each.
const SCHEMA_FINGERPRINT: &str = r#"
WITH ext AS (SELECT oid, extversion, extconfig, extcondition FROM pg_extension WHERE extname = 'pg_aicost'),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rels AS (SELECT c.oid, c.relname, c.relkind FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid)
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
    SELECT 'function ' || p.oid::regprocedure::text || ' = ' || pg_get_functiondef(p.oid)
           || ' -- ' || coalesce(obj_description(p.oid, 'pg_proc'), '<no comment>')
           || ' acl ' || coalesce(p.proacl::text, '<default>') AS line
      FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
    UNION ALL
    SELECT 'relation ' || r.relname || ' ' || r.relkind::text || ' -- ' || coalesce(obj_description(r.oid, 'pg_class'), '<no comment>')
           || ' acl ' || coalesce(c.relacl::text, '<default>') || ' options ' || coalesce(c.reloptions::text, '')
      FROM rels r JOIN pg_class c ON c.oid = r.oid
    UNION ALL
    SELECT 'column ' || r.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
           || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
           || ' -- ' || coalesce(col_description(r.oid, a.attnum), '<no comment>')
           || coalesce(' acl ' || a.attacl::text, '')
      FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = r.oid AND ad.adnum = a.attnum
    UNION ALL
    SELECT 'constraint ' || r.relname || '.' || co.conname || ' ' || pg_get_constraintdef(co.oid)
      FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM rels r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT 'view ' || r.relname || ' = ' || pg_get_viewdef(r.oid)
      FROM rels r WHERE r.relkind = 'v'
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled ' || t.tgenabled::text
      FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT 'schema acl ' || coalesce(n.nspacl::text, '<default>') FROM pg_namespace n WHERE n.nspname = 'aicost'
    UNION ALL
    SELECT 'dumped ' || c::regclass::text || ' where ' || coalesce(w, '')
      FROM ext, unnest(ext.extconfig, ext.extcondition) AS x(c, w)
    UNION ALL
    SELECT 'schema ' || n.nspname FROM pg_namespace n JOIN members m ON m.classid = 'pg_namespace'::regclass AND m.objid = n.oid
) x
"#;

fn fingerprint(c: &mut Client) -> String {
    c.query_one(SCHEMA_FINGERPRINT, &[])
        .expect("schema fingerprint")
        .get::<_, Option<String>>(0)
        .unwrap_or_default()
}

fn current_version(c: &mut Client) -> String {
    c.query_one(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_aicost'",
        &[],
    )
    .expect("pg_available_extensions")
    .get(0)
}

/// Lines of `a` missing from `b` and the reverse, for a readable failure.
fn diff(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let only_a: Vec<&&str> = la.iter().filter(|l| !lb.contains(l)).collect();
    let only_b: Vec<&&str> = lb.iter().filter(|l| !la.contains(l)).collect();
    format!("only after the upgrade:\n{only_a:#?}\nonly in a fresh install:\n{only_b:#?}")
}

#[test]
fn upgrades_from_every_release_match_a_fresh_install_and_keep_data() {
    let fresh = TestDb::new("upgrade_fresh");
    let mut f = fresh.connect();
    let want = fingerprint(&mut f);
    let version = current_version(&mut f);
    assert!(
        want.lines().count() > 100,
        "fingerprint of a fresh install:\n{want}"
    );

    for from in RELEASED {
        let db = TestDb::empty(&format!("upgrade_from_{}", from.replace('.', "_")));
        let mut c = db.connect();
        exec(
            &mut c,
            &format!("CREATE EXTENSION btree_gist; CREATE EXTENSION pg_aicost VERSION '{from}'"),
        );
        // Data written by the old version: a budget with spend, a ledger row, a changed price.
        exec(
            &mut c,
            "SELECT ai_budget_set('user', 'u', 10);
             INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('u', 'gpt-4o', 1000, 500);
             SELECT ai_price_set('gpt-4o', 'output', 12, effective_from => now() + interval '1 day');
             SELECT ai_budget_set('org', 'acme', 10);
             SELECT ai_budget_reserve('org', 'acme', 1, request_id => 'held', ttl => '1 hour')",
        );
        let spent_before = num(
            &mut c,
            "SELECT spent FROM aicost.budget_status WHERE scope_id = 'u'",
            &[],
        );
        assert_eq!(spent_before, Some(dec("0.0075")));

        exec(
            &mut c,
            &format!("ALTER EXTENSION pg_aicost UPDATE TO '{version}'"),
        );
        let got = fingerprint(&mut c);
        assert!(
            got == want,
            "upgrade {from} -> {version} differs from a fresh install:\n{}",
            diff(&got, &want)
        );

        // The data is intact and the upgraded functions work on it.
        let mut c = db.connect();
        assert_eq!(
            num(
                &mut c,
                "SELECT spent FROM aicost.budget_status WHERE scope_id = 'u'",
                &[]
            ),
            spent_before
        );
        exec(
            &mut c,
            "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('u', 'gpt-4o', 1000, 500)",
        );
        assert_eq!(
            num(
                &mut c,
                "SELECT spent FROM aicost.budget_status WHERE scope_id = 'u'",
                &[]
            ),
            Some(dec("0.0150"))
        );
        // The org budget and its reservation now belong to the org, and a row of that org with
        // the reservation's request id settles it.
        assert_eq!(
            num(
                &mut c,
                "SELECT reserved FROM aicost.budget_status WHERE scope_id = 'acme' AND org_id = 'acme'",
                &[]
            ),
            Some(dec("1"))
        );
        exec(
            &mut c,
            "INSERT INTO aicost.usage (org_id, request_id, model, in_tokens, out_tokens) VALUES ('acme', 'held', 'gpt-4o', 1000, 500)",
        );
        assert_eq!(
            num(
                &mut c,
                "SELECT reserved FROM aicost.budget_status WHERE scope_id = 'acme'",
                &[]
            ),
            Some(dec("0"))
        );
        assert_eq!(
            c.query("SELECT * FROM ai_budget_audit()", &[])
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            num(
                &mut c,
                "SELECT ai_cost('gpt-4o', 0, 1000000, at => now() + interval '2 days')",
                &[]
            ),
            Some(dec("12"))
        );
    }
}
