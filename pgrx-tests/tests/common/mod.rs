//! Shared helpers of the pg_aicost integration tests.
//!
//! Every test gets its own fresh database (so the tests may also run in parallel threads) and talks
//! to it through real, separate client connections. The cluster comes from `AICOST_TEST_DSN`
//! (default `host=127.0.0.1 port=28815 user=postgres`, the Makefile's cluster).
#![allow(dead_code)] // each test binary uses a different subset

use postgres::config::Host;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Notification, Row};
use rust_decimal::Decimal;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

pub const DEFAULT_DSN: &str = "host=127.0.0.1 port=28815 user=postgres";

/// The cluster's connection settings (`AICOST_TEST_DSN`).
pub fn base_config() -> Config {
    let dsn = std::env::var("AICOST_TEST_DSN").unwrap_or_else(|_| DEFAULT_DSN.to_string());
    let mut c =
        Config::from_str(&dsn).unwrap_or_else(|e| panic!("bad AICOST_TEST_DSN {dsn:?}: {e}"));
    c.connect_timeout(Duration::from_secs(10));
    c
}

/// LiteLLM's price file as `pgrx-tests/litellm/prepare.sh` (run by `make test-it`) laid it out:
/// the shared copy when there is one, else the identical file of the pinned LiteLLM wheel.
pub fn litellm_prices_path() -> PathBuf {
    repo_root().join("target/litellm-prices.json")
}

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// PostgreSQL's client binaries (pg_dump, pg_restore, psql).
pub fn pg_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("AICOST_PGBIN").map_or_else(
        || PathBuf::from("/usr/lib/postgresql/15/bin"),
        PathBuf::from,
    );
    dir.join(name)
}

/// A command running PostgreSQL program `program` as the `postgres` OS user when the tests run as
/// root (initdb and pg_ctl refuse root; the servers run as that user, like scripts/cluster.sh).
pub fn as_postgres(program: &std::path::Path) -> std::process::Command {
    use std::process::Command;
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// `-h HOST -p PORT -U USER` for the PostgreSQL command-line tools.
pub fn cli_conn_args() -> Vec<String> {
    let c = base_config();
    let mut args = Vec::new();
    if let Some(h) = c.get_hosts().first() {
        args.push("-h".to_string());
        args.push(match h {
            Host::Tcp(s) => s.clone(),
            Host::Unix(p) => p.display().to_string(),
        });
    }
    if let Some(p) = c.get_ports().first() {
        args.push("-p".to_string());
        args.push(p.to_string());
    }
    if let Some(u) = c.get_user() {
        args.push("-U".to_string());
        args.push(u.to_string());
    }
    args
}

fn admin() -> Client {
    let mut c = base_config();
    c.dbname("postgres");
    c.connect(NoTls).unwrap_or_else(|e| {
        panic!(
            "cannot connect to the test cluster ({e}); start it with scripts/cluster.sh start and set AICOST_TEST_DSN"
        )
    })
}

/// Runs labelled queries of one text value each; a query with `$1` gets `param` for it.
pub fn labelled_values(
    c: &mut Client,
    queries: &[(&str, &str)],
    param: &str,
) -> Vec<(String, Option<String>)> {
    queries
        .iter()
        .map(|(label, sql)| {
            let r = if sql.contains("$1") {
                c.query_one(*sql, &[&param])
            } else {
                c.query_one(*sql, &[])
            };
            let v: Option<String> = r
                .unwrap_or_else(|e| panic!("{label}: {}", describe(&e)))
                .get(0);
            (label.to_string(), v)
        })
        .collect()
}

/// A database of its own for one test. Dropped when the test passes; kept for inspection when it
/// fails (and dropped by the next run).
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// A fresh database with `CREATE EXTENSION pg_aicost CASCADE`.
    pub fn new(test: &str) -> TestDb {
        let db = TestDb::empty(test);
        db.connect()
            .batch_execute("CREATE EXTENSION pg_aicost CASCADE")
            .unwrap_or_else(|e| {
                panic!(
                    "CREATE EXTENSION pg_aicost in {}: {}",
                    db.name,
                    describe(&e)
                )
            });
        db
    }

    /// A fresh database without the extension (e.g. a restore target).
    pub fn empty(test: &str) -> TestDb {
        let name = format!("aicost_it_{test}");
        assert!(
            name.len() < 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
        let mut a = admin();
        // Serialize CREATE DATABASE across parallel tests: it copies template1, which must be idle.
        a.batch_execute("SELECT pg_advisory_lock(2815001)").unwrap();
        // Two statements: neither may run inside a (multi-statement, implicit) transaction block.
        let r = a
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .and_then(|()| a.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template1")));
        a.batch_execute("SELECT pg_advisory_unlock(2815001)")
            .unwrap();
        r.unwrap_or_else(|e| panic!("creating database {name}: {}", describe(&e)));
        TestDb { name }
    }

    pub fn config(&self) -> Config {
        let mut c = base_config();
        c.dbname(&self.name);
        c
    }

    /// A new, separate connection (its own backend) to this database.
    pub fn connect(&self) -> Client {
        self.config()
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = admin().batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// An error with its SQLSTATE, message, detail and hint, for assertion messages.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "{} {}: {}{}{}",
            d.severity(),
            d.code().code(),
            d.message(),
            d.detail()
                .map(|s| format!(" DETAIL: {s}"))
                .unwrap_or_default(),
            d.hint().map(|s| format!(" HINT: {s}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

/// Asserts that `r` failed with SQLSTATE `code`; returns the server's error.
#[track_caller]
pub fn expect_sqlstate<T: std::fmt::Debug>(
    r: Result<T, postgres::Error>,
    code: &str,
    what: &str,
) -> postgres::error::DbError {
    match r {
        Ok(v) => panic!("{what}: expected SQLSTATE {code}, but it succeeded with {v:?}"),
        Err(e) => {
            let Some(db) = e.as_db_error() else {
                panic!("{what}: expected SQLSTATE {code}, got a client error: {e}")
            };
            assert_eq!(
                db.code().code(),
                code,
                "{what}: wrong SQLSTATE: {}",
                describe(&e)
            );
            db.clone()
        }
    }
}

/// Runs `sql` (one statement) expecting SQLSTATE `code`, then checks the session is still usable.
#[track_caller]
pub fn expect_error(
    c: &mut Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    code: &str,
) -> postgres::error::DbError {
    let e = expect_sqlstate(c.query(sql, params).map(|rows| rows.len()), code, sql);
    let one: i32 = c
        .query_one("SELECT 1", &[])
        .unwrap_or_else(|e| panic!("session unusable after error of {sql}: {e}"))
        .get(0);
    assert_eq!(one, 1);
    e
}

/// The single numeric value of a one-row, one-column query (NULL is None).
#[track_caller]
pub fn num(c: &mut Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Option<Decimal> {
    let row = c
        .query_one(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    row.get(0)
}

/// `ai_cost('gpt-4o', 1000000, 0)`, i.e. gpt-4o's standard input price per million tokens.
#[track_caller]
pub fn gpt4o_input_price(c: &mut Client) -> Decimal {
    num(c, "SELECT ai_cost('gpt-4o', 1000000, 0)", &[]).expect("gpt-4o is priced")
}

pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[track_caller]
pub fn one_row(c: &mut Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Row {
    c.query_one(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
}

#[track_caller]
pub fn exec(c: &mut Client, sql: &str) {
    c.batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
}

/// A digest of the whole pricing catalog (models, aliases, price versions, sequence excluded):
/// equal digests mean no catalog row was written.
pub const CATALOG_DIGEST_SQL: &str = "SELECT md5(
    coalesce((SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s', price_id, model, usage_type,
                     service_tier, threshold_tokens, usd_per_mtok, valid, origin, source), E'\\n' ORDER BY price_id)
                FROM aicost.prices), '')
    || '#' || coalesce((SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', model, provider, mode,
                     max_input_tokens, source, as_of, origin), E'\\n' ORDER BY model)
                FROM aicost.models), '')
    || '#' || coalesce((SELECT string_agg(format('%s|%s|%s', alias, model, origin), E'\\n' ORDER BY alias)
                FROM aicost.model_aliases), ''))";

#[track_caller]
pub fn catalog_digest(c: &mut Client) -> String {
    one_row(c, CATALOG_DIGEST_SQL, &[]).get(0)
}

/// Waits (bounded) until `pred` holds, polling every 20 ms.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The backend pid of a connection.
pub fn backend_pid(c: &mut Client) -> i32 {
    one_row(c, "SELECT pg_backend_pid()", &[]).get(0)
}

/// Notifications that arrive within `first` (for the first one) and then within `quiet` of each
/// other.
pub fn drain(c: &mut Client, first: Duration, quiet: Duration) -> Vec<Notification> {
    let mut got = Vec::new();
    let mut n = c.notifications();
    let first = n.timeout_iter(first).next().expect("reading notifications");
    if let Some(x) = first {
        got.push(x);
        while let Some(x) = n.timeout_iter(quiet).next().expect("reading notifications") {
            got.push(x);
        }
    }
    got
}

/// A connection to the cluster's `postgres` database (which does not have the extension), or the
/// error: for tests that restart the server and must cope with it being down.
pub fn try_connect_admin() -> Result<Client, postgres::Error> {
    let mut c = base_config();
    c.dbname("postgres");
    c.connect(NoTls)
}

/// Whether pg_aicost is in the server's `shared_preload_libraries` (shared-memory mode).
pub fn server_preloaded(c: &mut Client) -> bool {
    let libs: String = one_row(c, "SHOW shared_preload_libraries", &[]).get(0);
    libs.split(',')
        .any(|l| l.trim().trim_matches('"') == "pg_aicost")
}

/// Fails the test unless the server runs in shared-memory mode (for tests named `shmem_*`, which
/// the Makefile skips in its run without preloading).
#[track_caller]
pub fn assert_server_preloaded() {
    let mut c =
        try_connect_admin().unwrap_or_else(|e| panic!("cannot connect to the test cluster: {e}"));
    assert!(
        server_preloaded(&mut c),
        "this test needs the cluster started with shared_preload_libraries = 'pg_aicost' \
         (AICOST_PRELOAD=1 scripts/cluster.sh restart); run the others with --skip shmem_"
    );
}

/// Runs `scripts/cluster.sh <cmd>` (start, stop, restart) on the test cluster, preloading pg_aicost
/// or not. The script finds the cluster through the inherited `AICOST_PGPORT` and
/// `AICOST_CLUSTER_DIR`; refuses to run when `AICOST_PGPORT` is not the port of `AICOST_TEST_DSN`
/// (it would restart some other cluster than the one the tests talk to).
pub fn cluster(cmd: &str, preload: bool) -> Result<(), String> {
    let dsn_port = base_config().get_ports().first().copied().unwrap_or(5432);
    let script_port = std::env::var("AICOST_PGPORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(28815);
    if dsn_port != script_port {
        return Err(format!(
            "AICOST_TEST_DSN uses port {dsn_port} but scripts/cluster.sh would manage the cluster \
             on port {script_port}: set AICOST_PGPORT (and AICOST_CLUSTER_DIR) for the test cluster"
        ));
    }
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/cluster.sh"))
        .arg(cmd)
        .env("AICOST_PRELOAD", if preload { "1" } else { "0" })
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running scripts/cluster.sh {cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scripts/cluster.sh {cmd} (preload {preload}) failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Waits (bounded) until the server accepts connections and runs queries again (after a restart
/// or a crash and its recovery); the last connection error if it does not.
pub fn wait_for_server(timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match try_connect_admin().and_then(|mut c| c.simple_query("SELECT 1").map(|_| ())) {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() >= timeout => {
                return Err(format!(
                    "the server did not accept connections within {timeout:?}: {}",
                    describe(&e)
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Messages (NOTICE, WARNING, ...) a connection received, in order.
pub type Notices = std::sync::Arc<std::sync::Mutex<Vec<postgres::error::DbError>>>;

impl TestDb {
    /// A new connection that collects every notice and warning the server sends it.
    pub fn connect_collecting_notices(&self) -> (Client, Notices) {
        let notices = Notices::default();
        let sink = notices.clone();
        let client = self
            .config()
            .notice_callback(move |n| sink.lock().expect("notice list").push(n))
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.name));
        (client, notices)
    }
}

/// A new session with bounded waits: no statement (lock waits included) runs longer than 20 s,
/// no transaction idles forever.
pub fn session(db: &TestDb) -> Client {
    let mut c = db.connect();
    exec(
        &mut c,
        "SET statement_timeout = '20s'; SET idle_in_transaction_session_timeout = '60s'",
    );
    c
}

/// The SQLSTATE of an error (or a description of a client-side error).
pub fn code_of(e: &postgres::Error) -> String {
    e.as_db_error().map_or_else(
        || format!("client error: {e}"),
        |d| d.code().code().to_string(),
    )
}

/// Runs `f(i, session_i)` in `n` threads, each with its own new session, all released together.
pub fn concurrently<T: Send>(
    db: &TestDb,
    n: usize,
    f: impl Fn(usize, &mut Client) -> T + Sync,
) -> Vec<T> {
    let mut clients: Vec<Client> = (0..n).map(|_| session(db)).collect();
    let barrier = Barrier::new(n);
    thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i, c)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("session thread panicked"))
            .collect()
    })
}

/// `ai_budget_audit()` must be empty.
#[track_caller]
pub fn assert_audit_empty(c: &mut Client) {
    let rows: Vec<String> = c
        .query(
            "SELECT format('budget %s period %s: recorded %s, ledger %s', budget_id, period_start, recorded, ledger)
               FROM ai_budget_audit()",
            &[],
        )
        .expect("ai_budget_audit()")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(rows.is_empty(), "ai_budget_audit() is not empty: {rows:#?}");
}

/// xorshift64: a tiny deterministic generator for randomized workloads and fuzzing (a fixed seed
/// replays the same sequence).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// A login role for one test, member of `group` (if any); dropped when the test ends.
pub struct LoginRole {
    pub name: String,
}

impl LoginRole {
    pub fn new(name: &str, group: Option<&str>) -> LoginRole {
        assert!(
            name.len() < 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
        let mut a = try_connect_admin().expect("connecting to the cluster as its superuser");
        exec(&mut a, &format!("DROP ROLE IF EXISTS {name}"));
        exec(&mut a, &format!("CREATE ROLE {name} LOGIN"));
        if let Some(g) = group {
            exec(&mut a, &format!("GRANT {g} TO {name}"));
        }
        LoginRole {
            name: name.to_string(),
        }
    }
}

impl Drop for LoginRole {
    fn drop(&mut self) {
        if let Ok(mut a) = try_connect_admin() {
            let _ = a.batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name));
        }
    }
}

/// A new connection (its own backend) to `db` as login role `role`, with bounded waits.
pub fn connect_as(db: &TestDb, role: &str) -> Client {
    let mut c = raw_connect_as(db, role);
    exec(
        &mut c,
        "SET statement_timeout = '20s'; SET idle_in_transaction_session_timeout = '60s'",
    );
    c
}

/// As [`connect_as`] but sends nothing: the pg_aicost library is not loaded in that backend yet
/// (unless the server preloads it).
pub fn raw_connect_as(db: &TestDb, role: &str) -> Client {
    let mut cfg = db.config();
    cfg.user(role);
    cfg.connect(NoTls)
        .unwrap_or_else(|e| panic!("connecting to {} as {role}: {e}", db.name))
}
