//! The circuit breaker's state machine (`ai_call_allowed`, `ai_call_report`, `ai_route`).
//!
//! One [`Breaker`] per canonical model and one per provider. States:
//! - **closed**: every call is admitted. Failures are counted two ways: consecutive failures, and
//!   failures over a sliding window of [`WINDOW_BUCKETS`] buckets. Either reaching its threshold
//!   opens the breaker.
//! - **open**: calls are refused until the cooldown ends. The cooldown doubles with each opening
//!   since the breaker was last closed (`cooldown`, `2 × cooldown`, ... up to `max_cooldown`).
//! - **half-open**: after the cooldown, at most `probes` calls are in flight at once (each
//!   admission takes a slot and each report frees one). `close_after` successes close the breaker.
//!   A failure opens it again with the next, longer cooldown. A probe that reports nothing within
//!   `cooldown` frees its slot (its caller died or never reports).
//!
//! Error classes: `client` errors (a bad request) are counted but never trip the breaker, and do
//! not count as a success either. Every other failure class counts as a failure.
//!
//! Time is in microseconds (PostgreSQL's `TimestampTz` scale). The state is a plain `Copy` struct
//! whose all-zero value is a fresh closed breaker, so it can live in zeroed shared memory; it is
//! also written to and read from a table row (`aicost.breaker_state`).

/// Buckets of the sliding failure window (each `window / WINDOW_BUCKETS` long).
pub const WINDOW_BUCKETS: usize = 10;

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum State {
    #[default]
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        match s {
            "closed" => Some(State::Closed),
            "open" => Some(State::Open),
            "half_open" => Some(State::HalfOpen),
            _ => None,
        }
    }
}

/// The outcome of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A failure that counts against the provider (rate limit, timeout, server, network, ...).
    Failure,
    /// The caller's own mistake (HTTP 4xx other than 429): counted, never trips.
    ClientError,
}

/// The error classes `ai_call_report` accepts, and what each counts as.
pub const ERROR_CLASSES: [(&str, Outcome); 6] = [
    ("rate_limit", Outcome::Failure),
    ("timeout", Outcome::Failure),
    ("server", Outcome::Failure),
    ("network", Outcome::Failure),
    ("overloaded", Outcome::Failure),
    ("client", Outcome::ClientError),
];

/// The outcome a report stands for: `ok`, else its error class (a failure without one counts as
/// `server`). None for an unknown class, or an error class given with `ok`.
pub fn outcome(ok: bool, error_class: Option<&str>) -> Option<Outcome> {
    match (ok, error_class) {
        (true, None) => Some(Outcome::Ok),
        (true, Some(_)) => None,
        (false, None) => Some(Outcome::Failure),
        (false, Some(c)) => ERROR_CLASSES
            .iter()
            .find(|(name, _)| *name == c)
            .map(|(_, o)| *o),
    }
}

/// A breaker's settings (`aicost.breaker_config`; [`Config::for_model`] / [`Config::for_provider`]
/// are the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Consecutive failures that open a closed breaker (0: off).
    pub failure_threshold: u32,
    /// Percentage of failed calls in the window that opens it (0: off), once the window holds at
    /// least `minimum_calls` calls.
    pub failure_rate_pct: u32,
    pub minimum_calls: u32,
    pub window_us: i64,
    /// The first cooldown; each further opening before the breaker closes doubles it.
    pub cooldown_us: i64,
    pub max_cooldown_us: i64,
    /// Calls in flight at once while half-open.
    pub probes: u32,
    /// Successes while half-open that close the breaker.
    pub close_after: u32,
}

const SECOND: i64 = 1_000_000;

impl Config {
    /// Defaults for a model: 5 consecutive failures or half of at least 20 calls in a minute open
    /// it for 30 s (doubling up to 10 min); 1 probe at a time, 2 successes close it.
    pub const fn for_model() -> Config {
        Config {
            failure_threshold: 5,
            failure_rate_pct: 50,
            minimum_calls: 20,
            window_us: 60 * SECOND,
            cooldown_us: 30 * SECOND,
            max_cooldown_us: 600 * SECOND,
            probes: 1,
            close_after: 2,
        }
    }

    /// Defaults for a provider: like a model's, but it takes more evidence (20 consecutive
    /// failures, or half of at least 100 calls) since one failing model should not stop the others.
    pub const fn for_provider() -> Config {
        Config {
            failure_threshold: 20,
            minimum_calls: 100,
            ..Config::for_model()
        }
    }

    /// Checks the ranges (`aicost.breaker_config` has the same CHECKs; this guards the shared
    /// state against anything else).
    pub fn validate(&self) -> Result<(), String> {
        if self.failure_rate_pct > 100 {
            return Err("failure_rate must be between 0 and 100".into());
        }
        if self.window_us < WINDOW_BUCKETS as i64 {
            return Err("window must be positive".into());
        }
        if self.cooldown_us <= 0 || self.max_cooldown_us < self.cooldown_us {
            return Err("cooldown must be positive and at most max_cooldown".into());
        }
        if self.probes == 0 || self.close_after == 0 {
            return Err("probes and close_after must be at least 1".into());
        }
        Ok(())
    }

    /// The cooldown of the `trips`-th opening since the breaker was last closed (1-based).
    pub fn cooldown(&self, trips: u32) -> i64 {
        let shift = trips.saturating_sub(1).min(62);
        self.cooldown_us
            .checked_mul(1i64 << shift)
            .unwrap_or(i64::MAX)
            .min(self.max_cooldown_us)
    }

    fn bucket_us(&self) -> i64 {
        (self.window_us / WINDOW_BUCKETS as i64).max(1)
    }
}

/// What `allow` decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The state after the decision.
    pub state: State,
    /// When refused: how long until a call may be admitted.
    pub retry_after_us: Option<i64>,
    /// Admitted as a half-open probe (holds a probe slot until reported).
    pub probe: bool,
}

/// One breaker. All-zero is a fresh closed breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Breaker {
    pub state: State,
    /// Consecutive failures while closed.
    pub consecutive_failures: u32,
    /// Openings since the breaker was last closed (the cooldown's exponent).
    pub trips: u32,
    /// Half-open: probes admitted and not yet reported.
    pub probes_in_flight: u32,
    /// Half-open: successes so far.
    pub probe_successes: u32,
    /// Totals since the breaker was created or reset.
    pub successes: u64,
    pub failures: u64,
    pub client_errors: u64,
    /// Calls refused.
    pub rejected: u64,
    /// Reports with a latency, and their sum (microseconds).
    pub latency_count: u64,
    pub latency_sum_us: u64,
    /// When the state last changed (0: never).
    pub changed_at: i64,
    /// When it last opened, and when the current cooldown ends.
    pub opened_at: i64,
    pub open_until: i64,
    /// Half-open: when the probe slots taken last are considered lost.
    pub probe_deadline: i64,
    /// The window: the bucket length it was built with and the newest bucket's number
    /// (`now / bucket_us`); bucket `n` is at index `n % WINDOW_BUCKETS`.
    pub bucket_us: i64,
    pub bucket_epoch: i64,
    pub window_ok: [u32; WINDOW_BUCKETS],
    pub window_failed: [u32; WINDOW_BUCKETS],
}

impl Breaker {
    /// Asks to make a call now.
    pub fn allow(&mut self, now: i64, cfg: &Config) -> Decision {
        if self.state == State::Open && now >= self.open_until {
            self.set_state(State::HalfOpen, now);
            self.probes_in_flight = 0;
            self.probe_successes = 0;
        }
        match self.state {
            State::Closed => Decision {
                allowed: true,
                state: State::Closed,
                retry_after_us: None,
                probe: false,
            },
            State::Open => self.refuse(self.open_until.saturating_sub(now)),
            State::HalfOpen => {
                if self.probes_in_flight >= cfg.probes && now >= self.probe_deadline {
                    self.probes_in_flight = 0; // lost probes
                }
                if self.probes_in_flight < cfg.probes {
                    self.probes_in_flight += 1;
                    self.probe_deadline = now.saturating_add(cfg.cooldown_us);
                    Decision {
                        allowed: true,
                        state: State::HalfOpen,
                        retry_after_us: None,
                        probe: true,
                    }
                } else {
                    self.refuse(self.probe_deadline.saturating_sub(now))
                }
            }
        }
    }

    /// Gives back a probe slot taken by [`Breaker::allow`] for a call that will not be made (the
    /// provider's breaker admitted it but the model's refused).
    pub fn release_probe(&mut self) {
        if self.state == State::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    fn refuse(&mut self, retry_after_us: i64) -> Decision {
        self.rejected = self.rejected.saturating_add(1);
        Decision {
            allowed: false,
            state: self.state,
            retry_after_us: Some(retry_after_us.max(0)),
            probe: false,
        }
    }

    /// Records the outcome of a call (and its latency, if known). Returns the new state.
    pub fn report(
        &mut self,
        now: i64,
        cfg: &Config,
        outcome: Outcome,
        latency_us: Option<i64>,
    ) -> State {
        if let Some(l) = latency_us {
            self.latency_count = self.latency_count.saturating_add(1);
            self.latency_sum_us = self.latency_sum_us.saturating_add(l.max(0) as u64);
        }
        match outcome {
            Outcome::Ok => self.successes = self.successes.saturating_add(1),
            Outcome::Failure => self.failures = self.failures.saturating_add(1),
            Outcome::ClientError => self.client_errors = self.client_errors.saturating_add(1),
        }
        match (self.state, outcome) {
            (State::Closed, Outcome::Ok) => {
                self.consecutive_failures = 0;
                self.count(now, cfg, true);
            }
            (State::Closed, Outcome::Failure) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.count(now, cfg, false);
                if self.should_trip(cfg) {
                    self.open(now, cfg);
                }
            }
            (State::HalfOpen, Outcome::Ok) => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                self.probe_successes = self.probe_successes.saturating_add(1);
                if self.probe_successes >= cfg.close_after {
                    self.close(now);
                }
            }
            (State::HalfOpen, Outcome::Failure) => self.open(now, cfg),
            (State::HalfOpen, Outcome::ClientError) => self.release_probe(),
            // Open: a late report of a call admitted before the breaker opened. Closed client
            // errors: neither health nor failure.
            _ => {}
        }
        self.state
    }

    fn should_trip(&self, cfg: &Config) -> bool {
        if cfg.failure_threshold > 0 && self.consecutive_failures >= cfg.failure_threshold {
            return true;
        }
        let (calls, failed) = self.window_counts();
        cfg.failure_rate_pct > 0
            && calls >= u64::from(cfg.minimum_calls.max(1))
            && failed * 100 >= u64::from(cfg.failure_rate_pct) * calls
    }

    /// Calls and failures in the window as of the last count.
    pub fn window_counts(&self) -> (u64, u64) {
        let ok: u64 = self.window_ok.iter().map(|&n| u64::from(n)).sum();
        let failed: u64 = self.window_failed.iter().map(|&n| u64::from(n)).sum();
        (ok + failed, failed)
    }

    /// Counts a closed-state call in the window, first dropping buckets older than the window.
    fn count(&mut self, now: i64, cfg: &Config, ok: bool) {
        let len = cfg.bucket_us();
        let epoch = now.div_euclid(len);
        if self.bucket_us != len {
            self.clear_window();
            self.bucket_us = len;
            self.bucket_epoch = epoch;
        } else if epoch > self.bucket_epoch {
            let stale = (epoch - self.bucket_epoch).min(WINDOW_BUCKETS as i64);
            for k in 1..=stale {
                let i = (self.bucket_epoch + k).rem_euclid(WINDOW_BUCKETS as i64) as usize;
                self.window_ok[i] = 0;
                self.window_failed[i] = 0;
            }
            self.bucket_epoch = epoch;
        }
        // A clock that stepped back counts in the newest bucket.
        let i = self.bucket_epoch.rem_euclid(WINDOW_BUCKETS as i64) as usize;
        if ok {
            self.window_ok[i] = self.window_ok[i].saturating_add(1);
        } else {
            self.window_failed[i] = self.window_failed[i].saturating_add(1);
        }
    }

    fn clear_window(&mut self) {
        self.window_ok = [0; WINDOW_BUCKETS];
        self.window_failed = [0; WINDOW_BUCKETS];
    }

    fn set_state(&mut self, s: State, now: i64) {
        self.state = s;
        self.changed_at = now;
    }

    fn open(&mut self, now: i64, cfg: &Config) {
        self.trips = self.trips.saturating_add(1);
        self.set_state(State::Open, now);
        self.opened_at = now;
        self.open_until = now.saturating_add(cfg.cooldown(self.trips));
        self.consecutive_failures = 0;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        self.clear_window();
    }

    fn close(&mut self, now: i64) {
        self.set_state(State::Closed, now);
        self.trips = 0;
        self.consecutive_failures = 0;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        self.clear_window();
    }

    /// How long until a call may be admitted, as of `now` (None: now).
    pub fn retry_after(&self, now: i64, cfg: &Config) -> Option<i64> {
        match self.state {
            State::Closed => None,
            State::Open => Some(self.open_until.saturating_sub(now)).filter(|&d| d > 0),
            State::HalfOpen => (self.probes_in_flight >= cfg.probes && now < self.probe_deadline)
                .then(|| self.probe_deadline.saturating_sub(now)),
        }
    }
}

/// Version byte of [`Breaker::encode`].
const ENCODING: u8 = 1;

impl Breaker {
    /// The state as bytes (the table mode's `aicost.breaker_state.data`): a version byte, then
    /// every field little-endian in declaration order.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(200);
        v.push(ENCODING);
        v.push(self.state as u8);
        for n in [
            self.consecutive_failures,
            self.trips,
            self.probes_in_flight,
            self.probe_successes,
        ] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        for n in [
            self.successes,
            self.failures,
            self.client_errors,
            self.rejected,
            self.latency_count,
            self.latency_sum_us,
        ] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        for n in [
            self.changed_at,
            self.opened_at,
            self.open_until,
            self.probe_deadline,
            self.bucket_us,
            self.bucket_epoch,
        ] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        for n in self.window_ok.iter().chain(&self.window_failed) {
            v.extend_from_slice(&n.to_le_bytes());
        }
        v
    }

    /// The state [`Breaker::encode`] wrote; None for bytes it did not write.
    pub fn decode(b: &[u8]) -> Option<Breaker> {
        let (&version, rest) = b.split_first()?;
        let (&state, mut rest) = rest.split_first()?;
        if version != ENCODING {
            return None;
        }
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let mut u32s = [0u32; 4 + 2 * WINDOW_BUCKETS];
        let mut u64s = [0u64; 6];
        let mut i64s = [0i64; 6];
        for x in &mut u32s[..4] {
            *x = u32::from_le_bytes(take(4)?.try_into().ok()?);
        }
        for x in &mut u64s {
            *x = u64::from_le_bytes(take(8)?.try_into().ok()?);
        }
        for x in &mut i64s {
            *x = i64::from_le_bytes(take(8)?.try_into().ok()?);
        }
        for x in &mut u32s[4..] {
            *x = u32::from_le_bytes(take(4)?.try_into().ok()?);
        }
        if !rest.is_empty() {
            return None;
        }
        let state = match state {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            _ => return None,
        };
        let [
            consecutive_failures,
            trips,
            probes_in_flight,
            probe_successes,
        ] = u32s[..4].try_into().ok()?;
        let [
            successes,
            failures,
            client_errors,
            rejected,
            latency_count,
            latency_sum_us,
        ] = u64s;
        let [
            changed_at,
            opened_at,
            open_until,
            probe_deadline,
            bucket_us,
            bucket_epoch,
        ] = i64s;
        Some(Breaker {
            state,
            consecutive_failures,
            trips,
            probes_in_flight,
            probe_successes,
            successes,
            failures,
            client_errors,
            rejected,
            latency_count,
            latency_sum_us,
            changed_at,
            opened_at,
            open_until,
            probe_deadline,
            bucket_us,
            bucket_epoch,
            window_ok: u32s[4..4 + WINDOW_BUCKETS].try_into().ok()?,
            window_failed: u32s[4 + WINDOW_BUCKETS..].try_into().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000;

    fn cfg() -> Config {
        Config {
            failure_threshold: 3,
            failure_rate_pct: 50,
            minimum_calls: 10,
            window_us: 10 * SECOND,
            cooldown_us: SECOND,
            max_cooldown_us: 5 * SECOND,
            probes: 2,
            close_after: 2,
        }
    }

    fn fail(b: &mut Breaker, now: i64) -> State {
        b.report(now, &cfg(), Outcome::Failure, None)
    }

    fn ok(b: &mut Breaker, now: i64) -> State {
        b.report(now, &cfg(), Outcome::Ok, None)
    }

    #[test]
    fn zeroed_is_closed_and_admits() {
        let mut b = Breaker::default();
        let d = b.allow(0, &cfg());
        assert!(d.allowed && !d.probe && d.state == State::Closed);
        assert_eq!(b.retry_after(0, &cfg()), None);
    }

    #[test]
    fn consecutive_failures_open_and_a_success_resets_them() {
        let mut b = Breaker::default();
        fail(&mut b, 0);
        fail(&mut b, 1);
        ok(&mut b, 2);
        fail(&mut b, 3);
        assert_eq!(fail(&mut b, 4), State::Closed);
        assert_eq!(fail(&mut b, 5), State::Open);
        assert_eq!((b.opened_at, b.open_until, b.trips), (5, 5 + SECOND, 1));
        let d = b.allow(6, &cfg());
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, Some(SECOND - 1));
        assert_eq!(b.rejected, 1);
    }

    #[test]
    fn client_errors_never_trip_nor_reset() {
        let mut b = Breaker::default();
        fail(&mut b, 0);
        fail(&mut b, 0);
        for t in 0..100 {
            b.report(t, &cfg(), Outcome::ClientError, None);
        }
        assert_eq!(b.state, State::Closed);
        assert_eq!(b.client_errors, 100);
        assert_eq!(fail(&mut b, 200), State::Open);
    }

    #[test]
    fn failure_rate_needs_minimum_calls_then_trips_at_the_rate() {
        let c = Config {
            failure_threshold: 0,
            ..cfg()
        };
        let mut b = Breaker::default();
        // alternate: 50% failures, but only from the 10th call on does the rate apply
        for i in 0..9 {
            let o = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Ok
            };
            assert_eq!(b.report(i, &c, o, None), State::Closed, "call {i}");
        }
        // 10 calls, 5 failed (50%), but only a failure can trip
        assert_eq!(b.report(9, &c, Outcome::Ok, None), State::Closed);
        assert_eq!(b.window_counts(), (10, 5));
        // the 11th call makes it 6 of 11 (54%)
        assert_eq!(b.report(10, &c, Outcome::Failure, None), State::Open);
    }

    #[test]
    fn the_window_forgets_old_buckets() {
        let c = Config {
            failure_threshold: 0,
            ..cfg()
        };
        let mut b = Breaker::default();
        for i in 0..9 {
            b.report(i, &c, Outcome::Failure, None);
        }
        assert_eq!(b.window_counts(), (9, 9));
        // 10 s later (one full window) the old failures are gone: 1 call, under minimum_calls
        assert_eq!(
            b.report(10 * SECOND, &c, Outcome::Failure, None),
            State::Closed
        );
        assert_eq!(b.window_counts(), (1, 1));
        // half a window later the bucket of 10 s is still in it
        for i in 0..8 {
            b.report(15 * SECOND + i, &c, Outcome::Ok, None);
        }
        assert_eq!(b.window_counts(), (9, 1));
        // at 19.999 s the bucket of 10 s is in; at 20 s it is out
        b.report(19 * SECOND + 999 * MS, &c, Outcome::Ok, None);
        assert_eq!(b.window_counts(), (10, 1));
        b.report(20 * SECOND, &c, Outcome::Ok, None);
        assert_eq!(b.window_counts(), (10, 0));
    }

    #[test]
    fn a_clock_stepping_back_counts_in_the_newest_bucket() {
        let mut b = Breaker::default();
        ok(&mut b, 5 * SECOND);
        ok(&mut b, SECOND);
        assert_eq!(b.window_counts(), (2, 0));
        assert_eq!(b.bucket_epoch, 5);
    }

    #[test]
    fn cooldown_doubles_per_trip_up_to_the_maximum() {
        let c = cfg();
        assert_eq!(
            (1..=6).map(|t| c.cooldown(t)).collect::<Vec<_>>(),
            [
                SECOND,
                2 * SECOND,
                4 * SECOND,
                5 * SECOND,
                5 * SECOND,
                5 * SECOND
            ]
        );
        assert_eq!(c.cooldown(u32::MAX), 5 * SECOND);
        let mut b = Breaker::default();
        let mut now = 0;
        for _ in 0..3 {
            fail(&mut b, now);
        }
        for trip in 1..=4u32 {
            assert_eq!(b.state, State::Open);
            assert_eq!(b.open_until - now, c.cooldown(trip));
            // just before the end: refused; at the end: a probe, which fails
            assert!(!b.allow(b.open_until - 1, &c).allowed);
            now = b.open_until;
            let d = b.allow(now, &c);
            assert!(d.allowed && d.probe && d.state == State::HalfOpen);
            assert_eq!(fail(&mut b, now), State::Open);
        }
        assert_eq!(b.trips, 5);
    }

    #[test]
    fn half_open_admits_at_most_probes_at_once_and_closes_after_successes() {
        let c = cfg();
        let mut b = Breaker::default();
        for _ in 0..3 {
            fail(&mut b, 0);
        }
        let t = SECOND;
        let admitted: Vec<bool> = (0..5).map(|_| b.allow(t, &c).allowed).collect();
        assert_eq!(admitted, [true, true, false, false, false]);
        assert_eq!(b.retry_after(t, &c), Some(SECOND));
        // one success frees a slot: one more probe
        assert_eq!(ok(&mut b, t + 1), State::HalfOpen);
        assert!(b.allow(t + 2, &c).allowed);
        assert!(!b.allow(t + 2, &c).allowed);
        // the second success closes; the trip count starts over
        assert_eq!(ok(&mut b, t + 3), State::Closed);
        assert_eq!((b.trips, b.probes_in_flight, b.changed_at), (0, 0, t + 3));
        assert!(b.allow(t + 4, &c).allowed);
    }

    #[test]
    fn lost_probes_free_their_slots_after_a_cooldown() {
        let c = cfg();
        let mut b = Breaker::default();
        for _ in 0..3 {
            fail(&mut b, 0);
        }
        assert!(b.allow(SECOND, &c).allowed);
        assert!(b.allow(SECOND, &c).allowed);
        assert!(!b.allow(2 * SECOND - 1, &c).allowed);
        assert!(b.allow(2 * SECOND, &c).allowed);
        assert_eq!(b.probes_in_flight, 1);
    }

    #[test]
    fn released_probes_and_client_errors_free_slots() {
        let c = cfg();
        let mut b = Breaker::default();
        for _ in 0..3 {
            fail(&mut b, 0);
        }
        assert!(b.allow(SECOND, &c).allowed);
        assert!(b.allow(SECOND, &c).allowed);
        b.release_probe();
        assert!(b.allow(SECOND, &c).allowed);
        b.report(SECOND, &c, Outcome::ClientError, None);
        assert_eq!(b.state, State::HalfOpen);
        assert!(b.allow(SECOND, &c).allowed);
        assert!(!b.allow(SECOND, &c).allowed);
    }

    #[test]
    fn late_reports_while_open_change_nothing_but_totals() {
        let mut b = Breaker::default();
        for _ in 0..3 {
            fail(&mut b, 0);
        }
        let before = b;
        ok(&mut b, 10);
        fail(&mut b, 11);
        assert_eq!(b.state, State::Open);
        assert_eq!(b.open_until, before.open_until);
        assert_eq!((b.successes, b.failures), (1, 4));
    }

    #[test]
    fn latency_is_summed() {
        let mut b = Breaker::default();
        b.report(0, &cfg(), Outcome::Ok, Some(1500));
        b.report(0, &cfg(), Outcome::Ok, None);
        b.report(0, &cfg(), Outcome::Failure, Some(500));
        assert_eq!((b.latency_count, b.latency_sum_us), (2, 2000));
    }

    #[test]
    fn outcomes_of_reports() {
        assert_eq!(outcome(true, None), Some(Outcome::Ok));
        assert_eq!(outcome(false, None), Some(Outcome::Failure));
        assert_eq!(outcome(false, Some("client")), Some(Outcome::ClientError));
        assert_eq!(outcome(false, Some("rate_limit")), Some(Outcome::Failure));
        assert_eq!(outcome(false, Some("nonsense")), None);
        assert_eq!(outcome(true, Some("timeout")), None);
    }

    #[test]
    fn config_validation() {
        assert!(Config::for_model().validate().is_ok());
        assert!(Config::for_provider().validate().is_ok());
        let bad = [
            Config {
                failure_rate_pct: 101,
                ..cfg()
            },
            Config { probes: 0, ..cfg() },
            Config {
                max_cooldown_us: 1,
                ..cfg()
            },
            Config {
                window_us: 0,
                ..cfg()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_other_bytes() {
        let mut b = Breaker::default();
        assert_eq!(Breaker::decode(&b.encode()), Some(b));
        for t in 0..7 {
            b.report(t * SECOND, &cfg(), Outcome::Failure, Some(t + 3));
            b.report(t * SECOND, &cfg(), Outcome::Ok, None);
        }
        for _ in 0..3 {
            b.report(8 * SECOND, &cfg(), Outcome::Failure, None);
        }
        b.allow(20 * SECOND, &cfg());
        b.rejected = u64::MAX;
        assert_eq!(b.state, State::HalfOpen);
        let bytes = b.encode();
        assert_eq!(Breaker::decode(&bytes), Some(b));
        assert_eq!(Breaker::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Breaker::decode(&[bytes.as_slice(), &[0]].concat()), None);
        assert_eq!(Breaker::decode(&[]), None);
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(Breaker::decode(&other), None);
        other = bytes;
        other[1] = 3;
        assert_eq!(Breaker::decode(&other), None);
    }

    /// Concurrency of the half-open limit: 16 threads asking at once under one lock (as the
    /// shared-memory entry's spinlock does) admit exactly `probes`.
    #[test]
    fn half_open_limit_holds_under_threads() {
        use std::sync::{Arc, Barrier, Mutex};
        let c = Config { probes: 3, ..cfg() };
        let b = Arc::new(Mutex::new(Breaker::default()));
        for _ in 0..3 {
            b.lock().unwrap().report(0, &c, Outcome::Failure, None);
        }
        let barrier = Arc::new(Barrier::new(16));
        let admitted: usize = (0..16)
            .map(|_| {
                let (b, barrier) = (b.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    b.lock().unwrap().allow(SECOND, &c).allowed as usize
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(admitted, 3);
    }
}
