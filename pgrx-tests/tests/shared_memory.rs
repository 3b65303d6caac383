//! Shared-memory mode (pg_aicost in `shared_preload_libraries`) across real sessions: the shared
//! pricing catalog and its generations, budget admission in shared memory (concurrency, rollbacks,
//! savepoints, reservations, a crash and a restart), PREPARE TRANSACTION, and the shared-memory
//! settings.
//!
//! Every test is named `shmem_*` (the Makefile skips them when the cluster is not preloaded) and
//! first checks that the server is preloaded. Tests that need other server settings change them
//! with ALTER SYSTEM and restart the cluster through `scripts/cluster.sh` (which finds it through
//! the inherited `AICOST_PGPORT` and `AICOST_CLUSTER_DIR`); a guard resets them and restarts the
//! cluster preloaded, also when the test fails. One test crashes a backend with SIGKILL (the test
//! process must be allowed to signal the server's processes, e.g. run as root).
//!
//! Budgets of the tests that are not about databases get ids no other test database uses (see
//! `distinct_budget_ids`), so that their failures point at what they test; keeping budgets of
//! different databases apart is `shmem_budget_per_database`'s subject.

mod common;

use common::*;
use postgres::Client;
use rust_decimal::Decimal;
use serde_json::Value;
use std::thread;
use std::time::Duration;

const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Server settings changed with ALTER SYSTEM for one test, the server restarted with them. Dropping
/// it (also when the test fails) resets them and restarts the server preloaded, so that the next
/// test finds the cluster as it expects.
struct ServerSettings {
    names: Vec<&'static str>,
}

impl ServerSettings {
    /// ALTER SYSTEM SET each setting, then restarts the server (preloading pg_aicost or not).
    fn apply(settings: &[(&'static str, &str)], preload: bool) -> ServerSettings {
        let guard = ServerSettings {
            names: settings.iter().map(|(n, _)| *n).collect(),
        };
        let mut a = try_connect_admin().unwrap_or_else(|e| panic!("{}", describe(&e)));
        for (name, value) in settings {
            exec(&mut a, &format!("ALTER SYSTEM SET {name} = '{value}'"));
        }
        drop(a);
        cluster("restart", preload).unwrap_or_else(|e| panic!("{e}"));
        wait_for_server(SERVER_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        guard
    }

    fn restore(&self) -> Result<(), String> {
        if try_connect_admin().is_err() {
            cluster("start", true)?;
            wait_for_server(SERVER_TIMEOUT)?;
        }
        // The postgres database does not have the extension: ALTER SYSTEM works there even when
        // the library cannot be loaded.
        let mut a = try_connect_admin().map_err(|e| describe(&e))?;
        for name in &self.names {
            a.batch_execute(&format!("ALTER SYSTEM RESET {name}"))
                .map_err(|e| format!("ALTER SYSTEM RESET {name}: {}", describe(&e)))?;
        }
        drop(a);
        cluster("restart", true)?;
        wait_for_server(SERVER_TIMEOUT)
    }
}

impl Drop for ServerSettings {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            let msg = format!(
                "restoring the server settings {:?} and restarting it preloaded failed: {e}",
                self.names
            );
            if thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// Sleeps past the next UTC midnight if it is less than a minute away, so that the rows of a test
/// (stamped with now()) and the current period of budget_status stay in one budget period.
fn avoid_utc_day_boundary(c: &mut Client) {
    let left: f64 = one_row(
        c,
        "SELECT extract(epoch FROM date_trunc('day', now(), 'UTC') + interval '1 day' - now())::float8",
        &[],
    )
    .get(0);
    if left < 60.0 {
        eprintln!("{left:.1} s to UTC midnight: waiting for the next day");
        thread::sleep(Duration::from_secs_f64(left + 1.0));
    }
}

/// Makes this database's next budget ids ones that no other database of the cluster uses (its
/// oid times 1000), whatever the tests that ran before.
fn distinct_budget_ids(c: &mut Client) {
    exec(
        c,
        "SELECT setval('aicost.budgets_budget_id_seq',
                       (SELECT oid::bigint * 1000 FROM pg_database WHERE datname = current_database()))",
    );
}

fn budget_set(c: &mut Client, call: &str) -> i64 {
    one_row(c, &format!("SELECT {call}"), &[]).get(0)
}

fn count(c: &mut Client, sql: &str) -> i64 {
    one_row(c, sql, &[]).get(0)
}

/// A ledger row of a given cost (USD, as text) for a user.
const INSERT_COST: &str = "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens, cost)
     VALUES ($1, 'gpt-4o', 0, 0, $2::text::numeric)";

fn charge(c: &mut Client, user: &str, usd: &str) -> Result<u64, postgres::Error> {
    c.execute(INSERT_COST, &[&user, &usd])
}

#[track_caller]
fn charge_ok(c: &mut Client, user: &str, usd: &str) {
    if let Err(e) = charge(c, user, usd) {
        panic!("charging {usd} USD to user {user}: {}", describe(&e));
    }
}

#[track_caller]
fn charge_refused(c: &mut Client, user: &str, usd: &str, why: &str) {
    expect_sqlstate(
        charge(c, user, usd),
        "AC001",
        &format!("charging {usd} USD to user {user} ({why})"),
    );
}

/// A user's budget as seen three ways: budget_status.spent, the sum over its aicost.budget_spend
/// slots, and the ledger's sum of the user's rows (current period; every row of these tests is).
#[derive(Debug, PartialEq, Eq)]
struct Spend {
    status: Decimal,
    slots: Decimal,
    ledger: Decimal,
}

fn spend(c: &mut Client, user: &str) -> Spend {
    let r = one_row(
        c,
        "SELECT s.spent,
                (SELECT coalesce(sum(bs.spent), 0) FROM aicost.budget_spend bs
                  WHERE bs.budget_id = s.budget_id AND bs.period_start = s.period_start),
                (SELECT coalesce(sum(u.cost), 0) FROM aicost.usage u WHERE u.user_id = s.scope_id)
           FROM aicost.budget_status s WHERE s.scope = 'user' AND s.scope_id = $1",
        &[&user],
    );
    Spend {
        status: r.get(0),
        slots: r.get(1),
        ledger: r.get(2),
    }
}

/// The three views of the spend agree and equal `usd`.
#[track_caller]
fn assert_spent(c: &mut Client, user: &str, usd: &str, what: &str) {
    let s = spend(c, user);
    let want = dec(usd);
    assert!(
        s.status == want && s.slots == want && s.ledger == want,
        "{what}: user {user} should have spent exactly {usd} USD (budget_status, spend slots, ledger): {s:?}"
    );
}

/// The thresholds recorded in aicost.budget_alerts for a budget, in order of spend.
fn alerts(c: &mut Client, budget: i64) -> Vec<String> {
    c.query(
        "SELECT threshold FROM aicost.budget_alerts WHERE budget_id = $1 ORDER BY spent, threshold",
        &[&budget],
    )
    .expect("budget_alerts")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Shared pricing catalog
// ---------------------------------------------------------------------------------------------

/// A price change follows commit and rollback across real sessions: the changing session sees it
/// at once, the others (warm or brand new) only after COMMIT, at their next statement, and never
/// after ROLLBACK.
#[test]
fn shmem_catalog_follows_commit_and_rollback() {
    assert_server_preloaded();
    let db = TestDb::new("shmem_catalog_commit");
    let (mut a, mut b) = (session(&db), session(&db));
    let (old, new) = (dec("2.50"), dec("3.00"));
    assert_eq!(gpt4o_input_price(&mut a), old, "A: default gpt-4o price");
    assert_eq!(gpt4o_input_price(&mut b), old, "B: default gpt-4o price");

    // A change rolled back.
    exec(&mut b, "BEGIN");
    exec(&mut b, "SELECT ai_price_set('gpt-4o', 'input', 3.00)");
    assert_eq!(
        gpt4o_input_price(&mut b),
        new,
        "B sees its own uncommitted change"
    );
    assert_eq!(
        gpt4o_input_price(&mut a),
        old,
        "A must not see B's uncommitted change"
    );
    assert_eq!(
        gpt4o_input_price(&mut db.connect()),
        old,
        "a new session must not see B's uncommitted change"
    );
    exec(&mut b, "ROLLBACK");
    assert_eq!(gpt4o_input_price(&mut b), old, "B after its rollback");
    assert_eq!(gpt4o_input_price(&mut a), old, "A after B's rollback");
    assert_eq!(
        gpt4o_input_price(&mut db.connect()),
        old,
        "first call of a new session after B's rollback"
    );

    // The same change committed.
    exec(&mut b, "BEGIN");
    exec(&mut b, "SELECT ai_price_set('gpt-4o', 'input', 3.00)");
    assert_eq!(gpt4o_input_price(&mut b), new, "B, uncommitted again");
    assert_eq!(gpt4o_input_price(&mut a), old, "A before B's commit");
    exec(&mut b, "COMMIT");
    assert_eq!(
        gpt4o_input_price(&mut db.connect()),
        new,
        "first call of a new session after B's commit"
    );
    assert_eq!(
        gpt4o_input_price(&mut a),
        new,
        "A's next statement after B's commit"
    );
    assert_eq!(gpt4o_input_price(&mut b), new, "B after its commit");

    // Another change, committed by A in autocommit while every session is warm with 3.00.
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'input', 3.50)");
    for (s, who) in [
        (&mut a, "A"),
        (&mut b, "B"),
        (&mut db.connect(), "a new session"),
    ] {
        assert_eq!(
            gpt4o_input_price(s),
            dec("3.5"),
            "{who} after the second change"
        );
    }
    // A new model (not only a new price) reaches the others too.
    exec(
        &mut a,
        "INSERT INTO aicost.models (model, provider) VALUES ('acme-1', 'acme');
         SELECT ai_price_set('acme-1', 'input', 1), ai_price_set('acme-1', 'output', 2)",
    );
    for (s, who) in [(&mut b, "B"), (&mut db.connect(), "a new session")] {
        assert_eq!(
            num(s, "SELECT ai_cost('acme-1', 1000000, 1000000)", &[]),
            Some(dec("3")),
            "{who}: a model added by A"
        );
    }
}

/// With several databases, each one prices from its own catalog: a change committed in one never
/// shows in another, whichever of them prices first after the change.
#[test]
fn shmem_catalog_per_database() {
    assert_server_preloaded();
    let (dx, dy) = (
        TestDb::new("shmem_catalog_db_x"),
        TestDb::new("shmem_catalog_db_y"),
    );
    let (mut x, mut y) = (session(&dx), session(&dy));
    assert_eq!(gpt4o_input_price(&mut x), dec("2.5"), "x: default price");
    assert_eq!(gpt4o_input_price(&mut y), dec("2.5"), "y: default price");

    // Changed in y; x prices first after the commit.
    exec(&mut y, "SELECT ai_price_set('gpt-4o', 'input', 7.00)");
    let x_after = gpt4o_input_price(&mut x);
    let y_after = gpt4o_input_price(&mut y);
    let y_new = gpt4o_input_price(&mut dy.connect());
    let x_new = gpt4o_input_price(&mut dx.connect());
    assert_eq!(
        (x_after, x_new, y_after, y_new),
        (dec("2.5"), dec("2.5"), dec("7"), dec("7")),
        "(database x, new session of x, database y, new session of y) after y set 7.00: each \
         database must price from its own catalog"
    );

    // Changed in x; y prices first after the commit.
    exec(&mut x, "SELECT ai_price_set('gpt-4o', 'input', 9.00)");
    let y_after = gpt4o_input_price(&mut y);
    let x_after = gpt4o_input_price(&mut x);
    assert_eq!(
        (x_after, y_after),
        (dec("9"), dec("7")),
        "(database x, database y) after x set 9.00"
    );
}

/// aicost.shmem_catalog_size too small for the catalog: every session still prices correctly
/// (from its own copy) and is told once, with a WARNING naming the setting.
#[test]
fn shmem_catalog_too_big_falls_back() {
    assert_server_preloaded();
    let json_path = litellm_prices_path();
    let json = std::fs::read_to_string(&json_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", json_path.display()));
    let db = TestDb::new("shmem_catalog_too_big");
    let _server = ServerSettings::apply(&[("aicost.shmem_catalog_size", "64")], true);

    let mut c = session(&db);
    let size: String = one_row(&mut c, "SHOW aicost.shmem_catalog_size", &[]).get(0);
    assert_eq!(size, "64kB", "the setting took effect");
    let default_models: Vec<String> = c
        .query("SELECT model FROM aicost.models", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let n: i32 = c
        .query_one("SELECT ai_pricing_import($1::text::jsonb)", &[&json])
        .unwrap_or_else(|e| panic!("ai_pricing_import: {}", describe(&e)))
        .get(0);
    assert!(n > 1000, "imported only {n} models");
    // A model only LiteLLM's file has, with one standard input price (no long-context tiers).
    let row = one_row(
        &mut c,
        "SELECT p.model, p.usd_per_mtok FROM aicost.current_prices p
          WHERE p.usage_type = 'input' AND p.service_tier = 'standard' AND p.threshold_tokens = 0
            AND p.model <> ALL ($1)
            AND NOT EXISTS (SELECT FROM aicost.prices q WHERE q.model = p.model AND q.threshold_tokens > 0)
            AND p.usd_per_mtok > 0
          ORDER BY p.model LIMIT 1",
        &[&default_models],
    );
    let (model, rate): (String, Decimal) = (row.get(0), row.get(1));

    for who in ["a new session", "another new session"] {
        let (mut s, notices) = db.connect_collecting_notices();
        let first = num(&mut s, "SELECT ai_cost($1, 1000000, 0)", &[&model]);
        assert_eq!(
            first,
            Some(rate),
            "{who}: {model} (LiteLLM only) at its imported input price"
        );
        assert_eq!(
            gpt4o_input_price(&mut s),
            dec("2.5"),
            "{who}: gpt-4o (default catalog)"
        );
        assert_eq!(
            num(&mut s, "SELECT ai_cost($1, 1000000, 0)", &[&model]),
            Some(rate),
            "{who}: {model} again"
        );
        let warnings: Vec<String> = notices
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.severity() == "WARNING")
            .map(|n| n.message().to_string())
            .collect();
        assert_eq!(
            warnings
                .iter()
                .filter(|m| m.contains("aicost.shmem_catalog_size"))
                .count(),
            1,
            "{who}: exactly one WARNING naming aicost.shmem_catalog_size per session, got {warnings:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// PREPARE TRANSACTION
// ---------------------------------------------------------------------------------------------

/// PREPARE TRANSACTION `gid` must fail with 0A000 (if it succeeds, the prepared transaction is
/// rolled back before the test fails, so that it does not outlive the test).
#[track_caller]
fn prepare_refused(c: &mut Client, gid: &str, what: &str) {
    match c.batch_execute(&format!("PREPARE TRANSACTION '{gid}'")) {
        Ok(()) => {
            let _ = c.batch_execute(&format!("ROLLBACK PREPARED '{gid}'"));
            panic!("PREPARE TRANSACTION of {what} succeeded; it must be refused with 0A000");
        }
        Err(e) => {
            assert_eq!(
                code_of(&e),
                "0A000",
                "PREPARE TRANSACTION of {what}: {}",
                describe(&e)
            );
        }
    }
    // The transaction is over (rolled back) and the session usable.
    assert_eq!(
        count(
            c,
            &format!("SELECT count(*) FROM pg_prepared_xacts WHERE gid = '{gid}'")
        ),
        0,
        "{what}: nothing was prepared"
    );
}

#[test]
fn shmem_prepare_transaction_refused() {
    assert_server_preloaded();
    let db = TestDb::new("shmem_prepare");
    let _server = ServerSettings::apply(&[("max_prepared_transactions", "4")], true);
    let mut c = session(&db);
    avoid_utc_day_boundary(&mut c);
    distinct_budget_ids(&mut c);

    // A price change.
    let digest = catalog_digest(&mut c);
    exec(&mut c, "BEGIN");
    exec(&mut c, "SELECT ai_price_set('gpt-4o', 'input', 4.00)");
    prepare_refused(&mut c, "aicost_price", "a transaction that changed a price");
    assert_eq!(catalog_digest(&mut c), digest, "the catalog changed");
    assert_eq!(gpt4o_input_price(&mut c), dec("2.5"), "the same session");
    assert_eq!(
        gpt4o_input_price(&mut session(&db)),
        dec("2.5"),
        "a new session"
    );

    // A charged usage row, and a reservation.
    budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");
    charge_ok(&mut c, "u", "0.40");
    exec(&mut c, "BEGIN");
    charge_ok(&mut c, "u", "0.30");
    prepare_refused(
        &mut c,
        "aicost_charge",
        "a transaction that charged a budget",
    );
    assert_spent(&mut c, "u", "0.40", "after the refused PREPARE of a charge");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM aicost.usage"),
        1,
        "ledger rows"
    );
    exec(&mut c, "BEGIN");
    exec(&mut c, "SELECT ai_budget_reserve('user', 'u', 0.10)");
    prepare_refused(&mut c, "aicost_hold", "a transaction that reserved budget");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM aicost.budget_reservations"),
        0,
        "reservations"
    );
    // Neither the refused charge nor the refused reservation still holds money.
    let mut other = session(&db);
    charge_ok(&mut other, "u", "0.60");
    charge_refused(&mut other, "u", "0.01", "the budget is exactly full");
    assert_spent(&mut c, "u", "1.00", "filled up");
    assert_audit_empty(&mut c);
}

// ---------------------------------------------------------------------------------------------
// Budget admission
// ---------------------------------------------------------------------------------------------

/// One row of the concurrency test.
const ROW: &str = "0.01";

/// Whether a statement's failure is the budget's refusal.
fn refused(r: &Result<u64, postgres::Error>) -> Result<(), String> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if code_of(e) == "AC001" => Ok(()),
        Err(e) => Err(describe(e)),
    }
}

/// What one writer of the concurrency test did.
#[derive(Debug, Default)]
struct Writer {
    /// Rows it committed.
    committed: usize,
    /// Rows it inserted and rolled back (with the transaction or to a savepoint).
    rolled_back: usize,
    /// The error of anything else than an AC001 refusal.
    failed: Option<String>,
}

/// One round of a writer: commits one row (when the budget admits it) and, except in kind 0,
/// inserts another row that it rolls back, with its transaction or to a savepoint. Ok(false) when
/// the row to commit was refused.
fn round(c: &mut Client, kind: usize, w: &mut Writer) -> Result<bool, String> {
    let sql = |c: &mut Client, s: &str| c.batch_execute(s).map_err(|e| describe(&e));
    let attempt = |c: &mut Client, w: &mut Writer| -> Result<(), String> {
        let r = charge(c, "u", ROW);
        refused(&r)?;
        w.rolled_back += usize::from(r.is_ok());
        Ok(())
    };
    let keep = |c: &mut Client| -> Result<bool, String> {
        let r = charge(c, "u", ROW);
        refused(&r)?;
        if r.is_err() {
            sql(c, "ROLLBACK")?;
        }
        Ok(r.is_ok())
    };
    match kind {
        0 => {
            let r = charge(c, "u", ROW);
            refused(&r)?;
            w.committed += usize::from(r.is_ok());
            Ok(r.is_ok())
        }
        1 => {
            // A row rolled back with its transaction, then one committed.
            sql(c, "BEGIN")?;
            attempt(c, w)?;
            sql(c, "ROLLBACK; BEGIN")?;
            if !keep(c)? {
                return Ok(false);
            }
            sql(c, "COMMIT")?;
            w.committed += 1;
            Ok(true)
        }
        2 => {
            // A row committed, with one rolled back to a savepoint after it.
            sql(c, "BEGIN")?;
            if !keep(c)? {
                return Ok(false);
            }
            sql(c, "SAVEPOINT s")?;
            attempt(c, w)?;
            sql(c, "ROLLBACK TO SAVEPOINT s; COMMIT")?;
            w.committed += 1;
            Ok(true)
        }
        _ => {
            // A row rolled back to a savepoint, then one committed in the same transaction.
            sql(c, "BEGIN; SAVEPOINT s")?;
            attempt(c, w)?;
            sql(c, "ROLLBACK TO SAVEPOINT s")?;
            if !keep(c)? {
                return Ok(false);
            }
            sql(c, "COMMIT")?;
            w.committed += 1;
            Ok(true)
        }
    }
}

/// A writer's rounds until its row to commit is refused (at most `cap` rounds).
fn writer(c: &mut Client, first_kind: usize, cap: usize) -> Writer {
    let mut w = Writer::default();
    for k in 0..cap {
        match round(c, (first_kind + k) % 4, &mut w) {
            Ok(true) => {}
            Ok(false) => return w,
            Err(e) => {
                w.failed = Some(e);
                return w;
            }
        }
    }
    w.failed = Some(format!("never refused in {cap} rounds"));
    w
}

/// 16 sessions spend one budget 0.01 at a time in shared-memory mode, with transactions and
/// savepoints rolled back in between: no overspend, and every rolled-back amount is released (the
/// budget can be filled to exactly its limit afterwards). Each session writes its own spend slot.
#[test]
fn shmem_budget_no_overspend_concurrent() {
    assert_server_preloaded();
    let db = TestDb::new("shmem_budget_concurrent");
    let mut c = session(&db);
    avoid_utc_day_boundary(&mut c);
    distinct_budget_ids(&mut c);

    // First, one session's rollbacks in a row on a small budget: each amount rolled back is free.
    budget_set(&mut c, "ai_budget_set('user', 'v', 0.05)");
    let mut other = session(&db);
    charge_ok(&mut c, "v", "0.03");
    exec(&mut c, "BEGIN");
    charge_ok(&mut c, "v", "0.02");
    charge_refused(
        &mut other,
        "v",
        "0.01",
        "0.03 committed + 0.02 in flight in another session",
    );
    exec(&mut c, "ROLLBACK");
    exec(&mut c, "BEGIN; SAVEPOINT a");
    charge_ok(&mut c, "v", "0.02");
    exec(&mut c, "ROLLBACK TO SAVEPOINT a");
    charge_ok(&mut c, "v", "0.01");
    charge_refused(
        &mut other,
        "v",
        "0.02",
        "0.03 committed + 0.01 in flight after ROLLBACK TO SAVEPOINT of 0.02",
    );
    exec(&mut c, "SAVEPOINT b; SAVEPOINT c");
    charge_ok(&mut c, "v", "0.01");
    exec(
        &mut c,
        "RELEASE SAVEPOINT c; ROLLBACK TO SAVEPOINT b; COMMIT",
    );
    assert_spent(
        &mut c,
        "v",
        "0.04",
        "0.03, then 0.01 committed (0.02 rolled back, 0.02 and 0.01 rolled back to savepoints)",
    );
    charge_ok(&mut other, "v", "0.01");
    charge_refused(&mut other, "v", "0.01", "0.05 of 0.05 spent");
    assert_spent(&mut c, "v", "0.05", "filled up");

    // Then 16 sessions at once.
    const LIMIT: &str = "4.00";
    const ROWS: usize = 400; // LIMIT / ROW
    budget_set(&mut c, &format!("ai_budget_set('user', 'u', {LIMIT})"));
    let writers = concurrently(&db, 16, |i, s| writer(s, i, 2000));
    for (i, w) in writers.iter().enumerate() {
        assert!(w.failed.is_none(), "session {i}: {w:?}");
    }
    let concurrent: usize = writers.iter().map(|w| w.committed).sum();
    let rolled_back: usize = writers.iter().map(|w| w.rolled_back).sum();
    eprintln!(
        "{concurrent} rows committed, {rolled_back} rolled back, per session {:?}",
        writers
            .iter()
            .map(|w| (w.committed, w.rolled_back))
            .collect::<Vec<_>>()
    );
    assert!(
        rolled_back > 16,
        "the rollbacks the test is about happened only {rolled_back} times"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM aicost.usage WHERE user_id = 'u'"
        ),
        concurrent as i64,
        "ledger rows vs rows the sessions committed"
    );
    let s = spend(&mut c, "u");
    assert!(
        s.status == s.slots && s.slots == s.ledger,
        "budget_status, spend slots and ledger disagree: {s:?}"
    );
    assert!(s.status <= dec(LIMIT), "overspent: {s:?} of {LIMIT}");
    let slots = count(
        &mut c,
        "SELECT count(DISTINCT slot) FROM aicost.budget_spend s JOIN aicost.budgets b USING (budget_id)
          WHERE b.scope_id = 'u' AND s.spent > 0",
    );
    assert!(
        slots > 1,
        "sessions wrote {slots} spend slot(s): shared-memory mode writes one per backend"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM aicost.budget_spend WHERE slot < 1"
        ),
        0,
        "slot 0 is per-backend mode's"
    );

    // A session may have been refused while others held money they then rolled back: whatever is
    // left must be usable to the cent.
    let mut topped_up = 0;
    loop {
        match charge(&mut c, "u", ROW) {
            Ok(_) => topped_up += 1,
            Err(e) if code_of(&e) == "AC001" => break,
            Err(e) => panic!("topping up: {}", describe(&e)),
        }
        assert!(topped_up <= ROWS, "more than {ROWS} rows of {ROW} admitted");
    }
    assert_eq!(
        concurrent + topped_up,
        ROWS,
        "rows of {ROW} USD that fit in {LIMIT} USD ({concurrent} concurrently, {topped_up} after): \
         amounts of rolled-back rows must be released"
    );
    assert_spent(&mut c, "u", LIMIT, "the budget ends exactly full");
    assert_audit_empty(&mut c);
}

/// With several databases, budgets with the same id are different budgets: spending one never
/// counts against the other.
#[test]
fn shmem_budget_per_database() {
    assert_server_preloaded();
    let (dx, dy) = (
        TestDb::new("shmem_budget_db_x"),
        TestDb::new("shmem_budget_db_y"),
    );
    let (mut x, mut y) = (session(&dx), session(&dy));
    avoid_utc_day_boundary(&mut x);
    // The same budget id in both databases.
    let id: i64 = one_row(
        &mut x,
        "SELECT oid::bigint * 1000 + 7 FROM pg_database WHERE datname = current_database()",
        &[],
    )
    .get(0);
    for s in [&mut x, &mut y] {
        one_row(
            s,
            "SELECT setval('aicost.budgets_budget_id_seq', $1)",
            &[&id],
        );
        let got = budget_set(s, "ai_budget_set('user', 'u', 1.00)");
        assert_eq!(got, id + 1);
    }

    charge_ok(&mut x, "u", "0.90");
    exec(&mut x, "BEGIN");
    charge_ok(&mut x, "u", "0.05"); // in flight
    let y_first = charge(&mut y, "u", "0.50").map_err(|e| describe(&e));
    exec(&mut x, "COMMIT");
    assert!(
        y_first.is_ok(),
        "database y's budget (nothing spent) refused 0.50 USD after database x's budget with the \
         same id spent 0.95: {y_first:?}"
    );
    charge_ok(&mut y, "u", "0.50");
    charge_refused(&mut y, "u", "0.01", "database y: 1.00 of 1.00 spent");
    charge_ok(&mut x, "u", "0.05");
    charge_refused(&mut x, "u", "0.01", "database x: 1.00 of 1.00 spent");
    assert_spent(&mut x, "u", "1.00", "database x");
    assert_spent(&mut y, "u", "1.00", "database y");
    assert_audit_empty(&mut x);
    assert_audit_empty(&mut y);
}

/// Shared-memory budget counters belong to one installation of the extension: after DROP
/// EXTENSION; CREATE EXTENSION the new budgets reuse the old ids, and must start from their own
/// (empty) spend, not from counters of the dropped budgets still in shared memory.
#[test]
fn shmem_budget_counters_do_not_survive_reinstall() {
    assert_server_preloaded();
    let db = TestDb::new("shmem_budget_reinstall");
    let mut c = session(&db);
    avoid_utc_day_boundary(&mut c);
    distinct_budget_ids(&mut c);
    let first = budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");
    charge_ok(&mut c, "u", "0.90");
    charge_refused(&mut c, "u", "0.20", "0.90 of 1.00 spent");

    exec(
        &mut c,
        "DROP EXTENSION pg_aicost; CREATE EXTENSION pg_aicost",
    );
    let mut c = session(&db);
    distinct_budget_ids(&mut c);
    let again = budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");
    assert_eq!(again, first, "the new budget reuses the dropped one's id");
    charge_ok(&mut c, "u", "0.95");
    assert_spent(&mut c, "u", "0.95", "a new installation's budget");
    charge_refused(&mut c, "u", "0.10", "0.95 of 1.00 spent");
    assert_audit_empty(&mut c);
}

/// Reservations in shared-memory mode, across sessions: a committed reservation counts until
/// released or settled; an uncommitted one counts while its transaction is open and is released
/// by its rollback (or by a rollback to a savepoint).
#[test]
fn shmem_reservations_across_sessions() {
    assert_server_preloaded();
    let db = TestDb::new("shmem_reservations");
    let (mut a, mut b) = (session(&db), session(&db));
    avoid_utc_day_boundary(&mut a);
    distinct_budget_ids(&mut a);
    budget_set(&mut a, "ai_budget_set('user', 'u', 1.00)");

    // Committed, then released.
    let id: i64 = one_row(&mut a, "SELECT ai_budget_reserve('user', 'u', 0.90)", &[]).get(0);
    charge_refused(&mut b, "u", "0.20", "0.90 reserved by A (committed)");
    expect_sqlstate(
        b.query("SELECT ai_budget_reserve('user', 'u', 0.20)", &[]),
        "AC001",
        "B reserving 0.20 with 0.90 reserved by A",
    );
    let released: bool = one_row(&mut a, "SELECT ai_budget_release($1)", &[&id]).get(0);
    assert!(released);
    charge_ok(&mut b, "u", "0.20");

    // Uncommitted: counts while open, released by the rollback.
    exec(&mut a, "BEGIN");
    exec(&mut a, "SELECT ai_budget_reserve('user', 'u', 0.70)");
    charge_refused(
        &mut b,
        "u",
        "0.20",
        "0.20 spent + 0.70 reserved in A's open transaction",
    );
    exec(&mut a, "ROLLBACK");
    charge_ok(&mut b, "u", "0.20");

    // Uncommitted and rolled back to a savepoint while the transaction goes on.
    exec(&mut a, "BEGIN; SAVEPOINT s");
    exec(&mut a, "SELECT ai_budget_reserve('user', 'u', 0.50)");
    charge_refused(
        &mut b,
        "u",
        "0.20",
        "0.40 spent + 0.50 reserved in A's open subtransaction",
    );
    exec(&mut a, "ROLLBACK TO SAVEPOINT s");
    charge_ok(&mut b, "u", "0.20");
    exec(&mut a, "COMMIT");

    // Committed, then settled by the usage row with its request_id.
    exec(&mut a, "BEGIN");
    exec(
        &mut a,
        "SELECT ai_budget_reserve('user', 'u', 0.35, request_id => 'r1')",
    );
    exec(&mut a, "COMMIT");
    charge_refused(&mut b, "u", "0.10", "0.60 spent + 0.35 reserved");
    exec(
        &mut a,
        "INSERT INTO aicost.usage (request_id, user_id, model, in_tokens, out_tokens, cost)
         VALUES ('r1', 'u', 'gpt-4o', 0, 0, 0.30)",
    );
    charge_ok(&mut b, "u", "0.10");
    charge_refused(&mut b, "u", "0.01", "1.00 of 1.00 spent");
    let r = one_row(
        &mut a,
        "SELECT reserved, remaining FROM aicost.budget_status WHERE scope_id = 'u'",
        &[],
    );
    assert_eq!(
        (r.get::<_, Decimal>(0), r.get::<_, Decimal>(1)),
        (dec("0"), dec("0")),
        "(reserved, remaining)"
    );
    assert_spent(&mut a, "u", "1.00", "the budget ends exactly full");
    assert_audit_empty(&mut a);
}

/// A session ended while its charge is in flight (pg_terminate_backend: no crash, shared memory
/// stays) releases the amount as it exits.
#[test]
fn shmem_budget_terminated_session_releases() {
    assert_server_preloaded();
    let db = TestDb::new("shmem_budget_terminated");
    let mut c = session(&db);
    avoid_utc_day_boundary(&mut c);
    distinct_budget_ids(&mut c);
    budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");
    let mut t = session(&db);
    let pid = backend_pid(&mut t);
    exec(&mut t, "BEGIN");
    charge_ok(&mut t, "u", "0.60");
    charge_refused(&mut c, "u", "0.50", "0.60 in flight in another session");
    // Waits (up to 10 s) until the backend is gone.
    let gone: bool = one_row(&mut c, "SELECT pg_terminate_backend($1, 10000)", &[&pid]).get(0);
    assert!(gone, "backend {pid} did not exit");
    charge_ok(&mut c, "u", "1.00");
    charge_refused(&mut c, "u", "0.01", "1.00 of 1.00 spent");
    assert_spent(&mut c, "u", "1.00", "filled up");
    assert_audit_empty(&mut c);
}

/// How the server loses its shared memory in [`counters_rebuilt`].
enum Interruption {
    /// A backend killed with SIGKILL: the postmaster ends every session and reinitializes.
    Crash,
    /// `scripts/cluster.sh restart` (fast shutdown).
    Restart,
}

/// Committed spend and committed reservations survive the loss of shared memory (the counters are
/// rebuilt from the tables), an uncommitted charge does not, and alerts recorded before are not
/// sent again.
fn counters_rebuilt(test: &str, how: Interruption) {
    assert_server_preloaded();
    let db = TestDb::new(test);
    let mut c = session(&db);
    avoid_utc_day_boundary(&mut c);
    distinct_budget_ids(&mut c);
    let budget = budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");
    charge_ok(&mut c, "u", "0.80"); // reaches the 80 % alert
    assert_eq!(alerts(&mut c, budget), ["alert"], "alerts before");
    let hold: i64 = one_row(&mut c, "SELECT ai_budget_reserve('user', 'u', 0.05)", &[]).get(0);
    let mut inflight = session(&db);
    exec(&mut inflight, "BEGIN");
    charge_ok(&mut inflight, "u", "0.10");
    charge_refused(
        &mut c,
        "u",
        "0.10",
        "0.80 committed + 0.05 reserved + 0.10 in flight in another session",
    );

    match how {
        Interruption::Crash => {
            let mut victim = session(&db);
            let pid = backend_pid(&mut victim);
            let st = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .expect("running kill");
            assert!(st.success(), "kill -9 {pid}: {st}");
            // The postmaster ends every other session before it reinitializes shared memory.
            wait_until(
                "the crash to end the other sessions",
                SERVER_TIMEOUT,
                || c.simple_query("SELECT 1").is_err(),
            );
        }
        Interruption::Restart => {
            cluster("restart", true).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    wait_for_server(SERVER_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        inflight.simple_query("SELECT 1").is_err(),
        "the session with the charge in flight survived"
    );

    let mut c = session(&db);
    assert!(server_preloaded(&mut c), "still preloaded");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM aicost.usage"),
        1,
        "ledger rows: the uncommitted one is gone"
    );
    assert_spent(&mut c, "u", "0.80", "after the interruption");
    let mut listener = session(&db);
    exec(&mut listener, "LISTEN aicost_budget");
    // Up to the limit less the reservation: the lost in-flight 0.10 no longer counts.
    charge_ok(&mut c, "u", "0.15");
    charge_refused(
        &mut c,
        "u",
        "0.01",
        "0.95 spent + 0.05 reserved before the interruption",
    );
    let released: bool = one_row(&mut c, "SELECT ai_budget_release($1)", &[&hold]).get(0);
    assert!(released);
    charge_ok(&mut c, "u", "0.05");
    charge_refused(&mut c, "u", "0.01", "1.00 of 1.00 spent");
    assert_spent(&mut c, "u", "1.00", "filled up");
    assert_audit_empty(&mut c);

    assert_eq!(
        alerts(&mut c, budget),
        ["alert", "throttle", "hard"],
        "one budget_alerts row per threshold"
    );
    exec(&mut listener, "SELECT 1");
    let mut sent: Vec<String> = drain(
        &mut listener,
        Duration::from_secs(5),
        Duration::from_millis(500),
    )
    .iter()
    .map(|n| {
        let p: Value = serde_json::from_str(n.payload())
            .unwrap_or_else(|e| panic!("payload {:?} is not JSON: {e}", n.payload()));
        assert_eq!(p["budget_id"].as_i64(), Some(budget), "{p}");
        p["threshold"].as_str().unwrap_or_default().to_string()
    })
    .collect();
    sent.sort();
    assert_eq!(
        sent,
        ["hard", "throttle"],
        "NOTIFY aicost_budget after the interruption: the alert recorded before must not be sent again"
    );
}

#[test]
fn shmem_budget_counters_survive_crash() {
    counters_rebuilt("shmem_budget_crash", Interruption::Crash);
}

#[test]
fn shmem_budget_counters_survive_restart() {
    counters_rebuilt("shmem_budget_restart", Interruption::Restart);
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// The shared-memory settings exist when preloaded; set without preloading, loading the library
/// fails with SQLSTATE 55000 naming the setting, at every attempt.
#[test]
fn shmem_gucs_and_not_preloaded_error() {
    assert_server_preloaded();
    let mut a = try_connect_admin().unwrap_or_else(|e| panic!("{}", describe(&e)));
    for name in [
        "aicost.shmem_catalog_size",
        "aicost.shmem_budgets",
        "aicost.stat_max_models",
    ] {
        let r = one_row(
            &mut a,
            "SELECT context, coalesce(unit, ''), current_setting($1) FROM pg_settings WHERE name = $1",
            &[&name],
        );
        let (context, unit, value): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(context, "postmaster", "{name}");
        assert!(!value.is_empty(), "{name}");
        if name == "aicost.shmem_catalog_size" {
            assert_eq!(unit, "kB", "{name}");
        }
    }
    let size: String = one_row(&mut a, "SHOW aicost.shmem_catalog_size", &[]).get(0);
    assert!(
        ["kB", "MB", "GB"].iter().any(|u| size.ends_with(u)),
        "SHOW aicost.shmem_catalog_size = {size:?}"
    );
    drop(a);
    // Created while preloaded: CREATE EXTENSION loads the library.
    let db = TestDb::new("shmem_gucs");

    {
        let _server = ServerSettings::apply(&[("aicost.shmem_budgets", "1000")], false);
        let mut c = db.connect();
        assert!(!server_preloaded(&mut c), "restarted without preloading");
        let e = expect_sqlstate(
            c.query("SELECT ai_cost('gpt-4o', 1, 1)", &[]),
            "55000",
            "first pg_aicost call of a session with aicost.shmem_budgets set and no preload",
        );
        assert!(
            e.message().contains("aicost.shmem_budgets")
                && e.message().contains("shared_preload_libraries"),
            "{}",
            e.message()
        );
        let again = c
            .query("SELECT ai_cost('gpt-4o', 1, 1)", &[])
            .map(|r| r.len())
            .map_err(|e| describe(&e));
        assert!(
            again
                .as_ref()
                .is_err_and(|e| e.contains("55000") && e.contains("aicost.shmem_budgets")),
            "a second pg_aicost call in the same session must fail the same way (55000 naming \
             aicost.shmem_budgets), got {again:?}"
        );
    }

    // Restored: preloaded, the setting gone from postgresql.auto.conf, pricing works.
    let mut c = db.connect();
    assert!(server_preloaded(&mut c), "restarted preloaded");
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_file_settings WHERE name = 'aicost.shmem_budgets'"
        ),
        0
    );
    assert_eq!(gpt4o_input_price(&mut c), dec("2.5"));
}

/// The statistics views count a real workload from several sessions exactly: pricing calls, their
/// tokens and money, errors, catalog cache use, budget charges and denials.
#[test]
fn shmem_stats_views_show_a_workload() {
    assert_server_preloaded();
    let db = TestDb::new("shmem_stats");
    let mut c = session(&db);
    exec(&mut c, "SELECT aicost.stat_reset()");
    exec(&mut c, "SELECT ai_budget_set('user', 'stats-u', 0.10)");

    // 4 sessions × 250 calls of 1000 in + 500 out tokens of gpt-4o (0.0075 USD each).
    concurrently(&db, 4, |_, s| {
        for _ in 0..250 {
            exec(s, "SELECT ai_cost('gpt-4o', 1000, 500)");
        }
    });
    // Errors: an unknown model (NULL row) and negative tokens of a known one.
    assert_eq!(
        code_of(
            &c.query("SELECT ai_cost('no-such-model', 1, 1)", &[])
                .unwrap_err()
        ),
        "42704"
    );
    assert_eq!(
        code_of(&c.query("SELECT ai_cost('gpt-4o', -1, 1)", &[]).unwrap_err()),
        "22023"
    );
    // Budget: 0.0075 per row against 0.10 => 13 rows fit, the 14th is denied.
    let mut denied = 0;
    for _ in 0..14 {
        if let Err(e) = c.execute(
            "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('stats-u', 'gpt-4o', 1000, 500)",
            &[],
        ) {
            assert_eq!(code_of(&e), "AC001");
            denied += 1;
        }
    }
    assert_eq!(denied, 1);

    let r = one_row(
        &mut c,
        "SELECT scope, calls, errors, in_tokens, out_tokens, cost_usd,
                mean_latency_us > 0, p50_latency_us <= p95_latency_us AND p95_latency_us <= p99_latency_us
           FROM aicost.stat_cost WHERE model = 'gpt-4o'",
        &[],
    );
    assert_eq!(r.get::<_, String>(0), "cluster");
    // 1,000 ai_cost calls + 14 ledger rows priced by the trigger; the negative-token call errs.
    assert_eq!(r.get::<_, i64>(1), 1014, "calls");
    assert_eq!(r.get::<_, i64>(3), 1014 * 1000, "in_tokens");
    assert_eq!(r.get::<_, i64>(4), 1014 * 500, "out_tokens");
    assert_eq!(
        r.get::<_, Decimal>(5),
        dec("7.605"),
        "cost_usd = 1014 × 0.0075"
    );
    assert!(
        r.get::<_, bool>(6) && r.get::<_, bool>(7),
        "latency columns"
    );
    let errors: i64 = one_row(
        &mut c,
        "SELECT coalesce(sum(errors), 0)::bigint FROM aicost.stat_cost",
        &[],
    )
    .get(0);
    assert_eq!(errors, 2, "one unknown model, one negative count");

    let r = one_row(
        &mut c,
        "SELECT charges, denials, budget_scope_id FROM aicost.stat_budget
          WHERE budget_scope_id = 'stats-u'",
        &[],
    );
    assert_eq!(r.get::<_, i64>(0), 13, "charges");
    assert_eq!(r.get::<_, i64>(1), 1, "denials");

    let r = one_row(
        &mut c,
        "SELECT scope, catalog_hits > 0, catalog_shared_reads > 0 FROM aicost.stat_cache",
        &[],
    );
    assert_eq!(r.get::<_, String>(0), "cluster");
    assert!(r.get::<_, bool>(1), "catalog hits counted");
    assert!(
        r.get::<_, bool>(2),
        "new sessions read their models from the shared catalog"
    );

    // aicost.track = off stops counting; stat_reset() zeroes.
    exec(
        &mut c,
        "SET aicost.track = off; SELECT ai_cost('gpt-4o', 1, 1); RESET aicost.track",
    );
    assert_eq!(
        one_row(
            &mut c,
            "SELECT calls FROM aicost.stat_cost WHERE model = 'gpt-4o'",
            &[]
        )
        .get::<_, i64>(0),
        1014
    );
    exec(&mut c, "SELECT aicost.stat_reset()");
    assert_eq!(
        one_row(
            &mut c,
            "SELECT count(*) FROM aicost.stat_cost WHERE model = 'gpt-4o'",
            &[]
        )
        .get::<_, i64>(0),
        0,
        "all-zero rows are hidden after a reset"
    );
}

/// A streaming replica of the test cluster, preloaded, on the next port; stopped and removed when
/// dropped.
struct Standby {
    dir: std::path::PathBuf,
    port: u16,
}

/// Runs a PostgreSQL server binary as the `postgres` OS user when the test runs as root.
fn run_as_postgres(bin: &str, args: &[&str]) -> Result<String, String> {
    let out = common::as_postgres(&pg_bin(bin))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{bin}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{bin} {args:?} failed: {text}"))
    }
}

impl Standby {
    fn create() -> Standby {
        let primary = base_config().get_ports().first().copied().unwrap_or(28815);
        let port = primary + 1;
        let dir = std::env::temp_dir().join(format!("pg_aicost-standby-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("standby directory");
        let _ = std::process::Command::new("chown")
            .args(["postgres:", &dir.to_string_lossy()])
            .status();
        let data = dir.join("data");
        let (data_s, dir_s) = (
            data.to_string_lossy().into_owned(),
            dir.to_string_lossy().into_owned(),
        );
        let primary_s = primary.to_string();
        run_as_postgres(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary_s,
                "-U",
                "postgres",
                "-D",
                &data_s,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let standby = Standby { dir, port };
        let opts = format!(
            "-c port={port} -c unix_socket_directories={dir_s} -c shared_preload_libraries=pg_aicost -c hot_standby=on"
        );
        let log = standby.dir.join("server.log");
        run_as_postgres(
            "pg_ctl",
            &[
                "-D",
                &data_s,
                "-l",
                &log.to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        standby
    }

    fn connect(&self, db: &TestDb) -> Client {
        let mut c = postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(&db.name)
            .connect_timeout(Duration::from_secs(10));
        c.connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to the standby: {e}"))
    }

    fn promote(&self) {
        let data = self.dir.join("data");
        run_as_postgres("pg_ctl", &["-D", &data.to_string_lossy(), "-w", "promote"])
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = run_as_postgres(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the standby has replayed everything the primary has written so far.
fn wait_for_replay(primary: &mut Client, standby: &mut Client) {
    let lsn: String = one_row(primary, "SELECT pg_current_wal_lsn()::text", &[]).get(0);
    wait_until("the standby to replay", Duration::from_secs(30), || {
        standby
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false)
    });
}

/// A preloaded standby prices with the primary's committed price changes (it cannot use the
/// shared catalog: replay does not bump its generation), and after promotion the budget counters
/// are rebuilt from the replicated tables before the first admission: the hard limit holds exactly.
#[test]
fn shmem_standby_follows_prices_and_promotion_rebuilds_counters() {
    assert_server_preloaded();
    let db = TestDb::new("shmem_standby");
    let mut p = session(&db);
    exec(
        &mut p,
        "SELECT ai_budget_set('user', 'sb', 1.00);
         INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('sb', 'gpt-4o', 320000, 0)",
    ); // 0.80 spent
    let standby = Standby::create();
    let mut s = standby.connect(&db);
    wait_for_replay(&mut p, &mut s);
    let cost = |c: &mut Client| num(c, "SELECT ai_cost('gpt-4o', 1000000, 0)", &[]);
    assert_eq!(cost(&mut s), Some(dec("2.5")));
    assert!(
        !one_row(&mut s, "SELECT aicost._shmem_budgets()", &[]).get::<_, bool>(0),
        "a standby never admits in shared memory"
    );

    exec(&mut p, "SELECT ai_price_set('gpt-4o', 'input', 3)");
    wait_for_replay(&mut p, &mut s);
    assert_eq!(cost(&mut s), Some(dec("3")), "the same standby session");
    assert_eq!(
        cost(&mut standby.connect(&db)),
        Some(dec("3")),
        "a new standby session"
    );

    // Promotion: the counters start from the replicated spend (0.80 of 1.00).
    standby.promote();
    wait_until("promotion", Duration::from_secs(30), || {
        s.query_one("SELECT NOT pg_is_in_recovery()", &[])
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false)
    });
    let mut n = standby.connect(&db);
    assert!(one_row(&mut n, "SELECT aicost._shmem_budgets()", &[]).get::<_, bool>(0));
    // gpt-4o output is 10 USD/Mtok: 20,000 tokens are exactly the 0.20 left.
    exec(
        &mut n,
        "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('sb', 'gpt-4o', 0, 20000)",
    );
    let over = n
        .execute(
            "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('sb', 'gpt-4o', 0, 1)",
            &[],
        )
        .unwrap_err();
    assert_eq!(code_of(&over), "AC001");
    assert_audit_empty(&mut n);
    assert_eq!(
        cost(&mut n),
        Some(dec("3")),
        "the promoted server's shared catalog"
    );
}

/// Alerts count committed spend only. Two open transactions that each stay below the alert
/// threshold together cross it when both commit: the second to commit records the alert, at the
/// exact crossing, with one NOTIFY. A transaction whose spend would cross the throttle threshold
/// only together with another one's uncommitted charge records nothing when that one rolls back.
#[test]
fn shmem_alerts_follow_committed_spend() {
    assert_server_preloaded();
    let db = TestDb::new("shmem_alert_commits");
    let mut c = session(&db);
    let b: i64 = one_row(&mut c, "SELECT ai_budget_set('user', 'al', 1.00)", &[]).get(0);
    let mut listener = session(&db);
    exec(&mut listener, "LISTEN aicost_budget");
    let insert = |s: &mut Client, in_tokens: i64| {
        s.execute(
            "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('al', 'gpt-4o', $1, 0)",
            &[&in_tokens],
        )
        .expect("insert")
    };
    insert(&mut c, 280_000); // 0.70 committed
    let (mut a, mut d) = (session(&db), session(&db));
    exec(&mut a, "BEGIN");
    exec(&mut d, "BEGIN");
    insert(&mut a, 20_000); // 0.70 + 0.05: below 0.80
    insert(&mut d, 20_000); // 0.70 + 0.05: below 0.80
    assert!(alerts(&mut c, b).is_empty());
    exec(&mut a, "COMMIT");
    exec(&mut d, "COMMIT"); // 0.75 -> 0.80
    assert_eq!(alerts(&mut c, b), ["alert"]);
    let spent = num(
        &mut c,
        "SELECT spent FROM aicost.budget_alerts WHERE threshold = 'alert'",
        &[],
    );
    assert_eq!(spent, Some(dec("0.80")), "recorded at the exact crossing");

    // Throttle at 0.95: 0.80 committed; 0.10 in flight that will roll back; 0.06 committed.
    exec(&mut a, "BEGIN");
    insert(&mut a, 40_000); // 0.80 + 0.10 = 0.90
    insert(&mut d, 24_000); // 0.80 + 0.06 = 0.86 (0.96 with a's uncommitted 0.10)
    exec(&mut a, "ROLLBACK");
    assert_eq!(
        alerts(&mut c, b),
        ["alert"],
        "no throttle alert for spend that rolled back"
    );
    assert_audit_empty(&mut c);

    exec(&mut listener, "SELECT 1");
    let got = drain(
        &mut listener,
        Duration::from_secs(2),
        Duration::from_millis(300),
    );
    assert_eq!(
        got.len(),
        1,
        "one NOTIFY: {:?}",
        got.iter().map(|n| n.payload()).collect::<Vec<_>>()
    );
}
