//! Retries: when a failed request may be tried again, how many retries a
//! pool can afford, and how long to wait in between.
//!
//! The rules ([`decide_retry`] decides, `proxy.rs` carries the decision
//! out):
//!
//! - A request that was **never sent** (connect refused or timed out, a
//!   pooled connection found closed before the request was written) may be
//!   retried whatever its method: the endpoint cannot have acted on it.
//! - An **idempotent** request (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE,
//!   PUT, DELETE) with a **replayable** body (none, or one of known length
//!   up to `max_replay_body`, buffered before sending) may be retried after
//!   the connection was reset or closed before the response headers, or
//!   when the response status is in `on_statuses`.
//! - Never after the response started going to the client: every retry
//!   decision is made before response headers are forwarded.
//! - Always on a **different** endpoint; if there is none, the error stands.
//! - Bounded by `attempts` and by a per-pool [`Budget`], so that when every
//!   endpoint fails, retries add at most `budget_ratio` of the traffic plus
//!   `budget_min_per_second`, instead of multiplying it (the retry budget of
//!   Finagle and linkerd).
//! - Between attempts, a full-jitter exponential backoff; a `503` with
//!   `Retry-After` no longer than `backoff_max` waits that long instead,
//!   and a longer `Retry-After` is not retried.
//!
//! [`decide_retry`] is pure: it sees what the attempt produced and the
//! request's properties, and asks its [`RetryEnv`] (the pool, in the proxy)
//! for the three things that have a cost, each only once every cheaper
//! check has passed: the response's `Retry-After`, a lease on another
//! endpoint, and a budget token. [`RetryReason`] is both the decision's
//! reason and the index of the `weir_retries_total` label.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use http::Method;

/// Why a request was retried; also the `reason` label of
/// `weir_retries_total`, indexed by [`RetryReason::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum RetryReason {
    /// The request never left weir (connect failure, a pooled connection
    /// found closed): any method.
    NotSent = 0,
    /// The connection was reset or closed before the response head.
    Reset = 1,
    /// The response status is in `on_statuses`.
    Status = 2,
}

impl RetryReason {
    /// How many reasons there are: the length of the metric arrays.
    pub const COUNT: usize = 3;
    /// Every reason, in index order.
    pub const ALL: [RetryReason; RetryReason::COUNT] = [
        RetryReason::NotSent,
        RetryReason::Reset,
        RetryReason::Status,
    ];

    /// The position in [`RetryReason::ALL`] and in the metric arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            RetryReason::NotSent => "not_sent",
            RetryReason::Reset => "reset",
            RetryReason::Status => "status",
        }
    }
}

/// What one attempt at sending a request produced, as far as retrying
/// cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// A response head arrived with this status.
    Response(u16),
    /// The request provably never left weir: the endpoint cannot have
    /// acted on it.
    NotSent,
    /// The connection failed after the request may have been written and
    /// before a response head (reset, closed, protocol error).
    Reset,
    /// Any other failure after the request may have been written, chiefly
    /// no response head in time: the endpoint may still be working on it.
    Failed,
}

/// The inputs of [`decide_retry`] that are known without asking anyone.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    /// What the attempt produced.
    pub result: AttemptResult,
    /// Whether any of the response already went to the client. (Always
    /// false today: every decision is taken before a response head is
    /// forwarded; kept as an input so the rule is stated and tested here.)
    pub downstream_started: bool,
    /// Whether the method is idempotent ([`is_idempotent`]).
    pub idempotent: bool,
    /// Whether a copy of the request, body included, is at hand.
    pub replayable: bool,
    /// This attempt's number, 1 for the first.
    pub number: u32,
    /// The most attempts allowed, the first included.
    pub max_attempts: u32,
}

/// What [`decide_retry`] asks, in this order and only when the answer can
/// still change the decision.
pub trait RetryEnv {
    /// What a retry is sent to (a lease on an endpoint, in the proxy).
    type Endpoint;
    /// The response's `Retry-After` delay; asked only for a retryable 503.
    fn retry_after(&self) -> Option<Duration>;
    /// An endpoint not tried yet, if there is one.
    fn another_endpoint(&mut self) -> Option<Self::Endpoint>;
    /// Takes one token from the retry budget; false if it is empty. Asked
    /// last, so a token is only spent on a retry that happens.
    fn withdraw_token(&mut self) -> bool;
}

/// How long to wait before a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Full jitter: uniform in `[0, ceiling]`.
    UpTo(Duration),
    /// What the endpoint's `Retry-After` asked for.
    Exactly(Duration),
}

impl Wait {
    /// The delay to sleep (drawing the jitter).
    pub fn duration(self) -> Duration {
        match self {
            Wait::UpTo(ceiling) => ceiling.mul_f64(fastrand::f64()),
            Wait::Exactly(d) => d,
        }
    }
}

/// Why a request is not retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The outcome is not one a retry is for: a response whose status is
    /// not in `on_statuses`, or a failure after the request may have been
    /// acted on that is not a reset (a response timeout).
    NotRetryable,
    /// Part of the response already went to the client.
    DownstreamStarted,
    /// The request may have reached the endpoint and its method is not
    /// idempotent.
    NotIdempotent,
    /// The request may have reached the endpoint and its body cannot be
    /// sent again.
    NotReplayable,
    /// This was the last attempt the pool allows.
    AttemptsExhausted,
    /// A 503 asked for a longer wait than `backoff_max`.
    RetryAfterTooLong,
    /// Every available endpoint was tried.
    NoOtherEndpoint,
    /// The pool's retry budget is empty.
    BudgetExhausted,
}

/// What to do after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum RetryDecision<E> {
    /// Send the request again, to `endpoint`, after `wait`.
    Retry {
        /// Why (the metric label).
        reason: RetryReason,
        /// The delay before the retry.
        wait: Wait,
        /// Where the retry goes.
        endpoint: E,
    },
    /// The attempt's outcome stands.
    GiveUp(GiveUp),
}

/// Whether and how to retry after `attempt`, under `policy` (see the
/// module docs for the rules).
pub fn decide_retry<E: RetryEnv>(
    attempt: &Attempt,
    policy: &RetryConfig,
    env: &mut E,
) -> RetryDecision<E::Endpoint> {
    let give_up = RetryDecision::GiveUp;
    if attempt.downstream_started {
        return give_up(GiveUp::DownstreamStarted);
    }
    let reason = match attempt.result {
        AttemptResult::NotSent => RetryReason::NotSent,
        AttemptResult::Reset => RetryReason::Reset,
        AttemptResult::Response(s) if policy.on_statuses.contains(&s) => RetryReason::Status,
        AttemptResult::Response(_) | AttemptResult::Failed => return give_up(GiveUp::NotRetryable),
    };
    // Only a request that never left weir is safe whatever its method; any
    // other may have been acted on, and is sent again only if doing it
    // twice is harmless and it can be sent whole.
    if reason != RetryReason::NotSent {
        if !attempt.idempotent {
            return give_up(GiveUp::NotIdempotent);
        }
        if !attempt.replayable {
            return give_up(GiveUp::NotReplayable);
        }
    }
    if attempt.number >= attempt.max_attempts {
        return give_up(GiveUp::AttemptsExhausted);
    }
    let backoff = Wait::UpTo(backoff_ceiling(
        attempt.number,
        policy.backoff_base,
        policy.backoff_max,
    ));
    let wait = match attempt.result {
        AttemptResult::Response(503) => match env.retry_after() {
            Some(d) if d > policy.backoff_max => return give_up(GiveUp::RetryAfterTooLong),
            Some(d) => Wait::Exactly(d),
            None => backoff,
        },
        _ => backoff,
    };
    // Another endpoint first, then the budget: a token is only spent on a
    // retry that can happen.
    let Some(endpoint) = env.another_endpoint() else {
        return give_up(GiveUp::NoOtherEndpoint);
    };
    if !env.withdraw_token() {
        return give_up(GiveUp::BudgetExhausted);
    }
    RetryDecision::Retry {
        reason,
        wait,
        endpoint,
    }
}

/// One token is 1000 milli-tokens; fixed point keeps the budget lock-free.
const TOKEN: i64 = 1000;

/// A lock-free retry budget: each request deposits `ratio` tokens, a retry
/// withdraws one, and `min_per_second` tokens are added per second so a
/// quiet pool can still retry. The reserve is capped at ten seconds' worth
/// of the floor (at least 100 tokens), so a long healthy period cannot fund
/// a long storm of retries later.
#[derive(Debug)]
pub struct Budget {
    tokens: AtomicI64,
    last_refill_ms: AtomicU64,
    deposit: i64,
    floor_per_sec: i64,
    cap: i64,
    base: Instant,
}

impl Budget {
    /// A budget starting with one second's floor.
    pub fn new(ratio: f64, min_per_second: u32, now: Instant) -> Self {
        let floor = i64::from(min_per_second);
        Budget {
            tokens: AtomicI64::new(floor * TOKEN),
            last_refill_ms: AtomicU64::new(0),
            deposit: (ratio * TOKEN as f64).round() as i64,
            floor_per_sec: floor,
            cap: (floor * 10).max(100) * TOKEN,
            base: now,
        }
    }

    /// Records one original (non-retry) request.
    pub fn deposit(&self) {
        self.add(self.deposit);
    }

    fn add(&self, milli: i64) {
        if milli <= 0 {
            return;
        }
        let cap = self.cap;
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(milli).min(cap))
            });
    }

    /// Takes one retry's worth of tokens if there is one.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let now_ms = now.saturating_duration_since(self.base).as_millis() as u64;
        let last = self.last_refill_ms.load(Ordering::Relaxed);
        if now_ms > last
            && self
                .last_refill_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // floor tokens/s × elapsed ms = milli-tokens.
            self.add(self.floor_per_sec.saturating_mul((now_ms - last) as i64));
        }
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= TOKEN).then_some(t - TOKEN)
            })
            .is_ok()
    }
}

/// RFC 9110 §9.2.2 idempotent methods.
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The ceiling of the full-jitter backoff after attempt `retry` (1 for the
/// first attempt, so before the first retry): the wait is uniform in
/// `[0, min(max, base × 2^(retry-1))]` (the AWS architecture blog's "full
/// jitter", which spreads synchronized clients best; see [`Wait::UpTo`]).
pub fn backoff_ceiling(retry: u32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(max)
}

/// The delay a `Retry-After` header asks for, if it is in delta-seconds
/// form. (An HTTP-date is not honoured: it needs a trusted clock, and a
/// proxy should not hold a request that long anyway.)
pub fn retry_after(value: &[u8]) -> Option<Duration> {
    let v = std::str::from_utf8(value).ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A pool's `retries:` block. See the module docs for the exact rules;
/// `config` validates it from YAML.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Total attempts including the first (1 = no retries). Default 2.
    pub attempts: u32,
    /// Response statuses that make an idempotent, replayable request retry.
    /// Default none.
    pub on_statuses: Vec<u16>,
    /// Request bodies up to this many bytes (with a known length) are
    /// buffered so they can be replayed. Default 65536.
    pub max_replay_body: u64,
    /// Retries may add at most this fraction of the pool's request rate.
    /// Default 0.2.
    pub budget_ratio: f64,
    /// Retries per second always allowed on top of the ratio. Default 10.
    pub budget_min_per_second: u32,
    /// First backoff (full jitter). Default 10ms.
    pub backoff_base: Duration,
    /// Backoff cap; also the longest `Retry-After` honoured. Default 250ms.
    pub backoff_max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 2,
            on_statuses: Vec::new(),
            max_replay_body: 64 * 1024,
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(250),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[test]
    fn budget_bounds_retries_by_ratio_plus_floor() {
        let t0 = Instant::now();
        let b = Budget::new(0.2, 0, t0);
        // No floor, no deposits: nothing to spend.
        assert!(!b.try_withdraw(t0));
        // 100 requests at 20% → 20 retries, not 21.
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn budget_floor_refills_per_second() {
        let t0 = Instant::now();
        let b = Budget::new(0.0, 5, t0);
        let first = (0..50).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(first, 5, "starts with one second of floor");
        let later = t0 + Duration::from_secs(2);
        let second = (0..50).filter(|_| b.try_withdraw(later)).count();
        assert_eq!(second, 10, "two more seconds of floor");
    }

    #[test]
    fn budget_reserve_is_capped() {
        let t0 = Instant::now();
        let b = Budget::new(1.0, 1, t0);
        for _ in 0..100_000 {
            b.deposit();
        }
        let granted = (0..100_000).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 100);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_below_it() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(250);
        let ceilings: Vec<u64> = (1..=7)
            .map(|r| backoff_ceiling(r, base, max).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [10, 20, 40, 80, 160, 250, 250]);
        assert_eq!(backoff_ceiling(u32::MAX, base, max), max, "no overflow");
        for retry in 1..10 {
            let ceiling = backoff_ceiling(retry, base, max);
            let d = Wait::UpTo(ceiling).duration();
            assert!(d <= ceiling, "{retry}: {d:?} > {ceiling:?}");
        }
        assert_eq!(Wait::Exactly(max).duration(), max);
    }

    #[test]
    fn retry_after_delta_seconds_only() {
        assert_eq!(retry_after(b" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after(b"\xff"), None);
    }

    #[test]
    fn reason_indices_match_all_and_labels_are_stable() {
        for (i, r) in RetryReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let labels = RetryReason::ALL.map(RetryReason::as_str);
        assert_eq!(labels, ["not_sent", "reset", "status"]);
    }

    /// A scripted environment that records what it was asked.
    #[derive(Debug, Default)]
    struct Env {
        retry_after: Option<Duration>,
        endpoint: bool,
        token: bool,
        asked: Vec<&'static str>,
    }

    impl RetryEnv for Env {
        type Endpoint = &'static str;
        fn retry_after(&self) -> Option<Duration> {
            self.retry_after
        }
        fn another_endpoint(&mut self) -> Option<&'static str> {
            self.asked.push("endpoint");
            self.endpoint.then_some("other")
        }
        fn withdraw_token(&mut self) -> bool {
            self.asked.push("token");
            self.token
        }
    }

    fn policy() -> RetryConfig {
        RetryConfig {
            on_statuses: vec![502, 503],
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(2),
            ..RetryConfig::default()
        }
    }

    /// An idempotent, replayable first attempt of two.
    fn first(result: AttemptResult) -> Attempt {
        Attempt {
            result,
            downstream_started: false,
            idempotent: true,
            replayable: true,
            number: 1,
            max_attempts: 2,
        }
    }

    fn ready() -> Env {
        Env {
            endpoint: true,
            token: true,
            ..Env::default()
        }
    }

    fn retry(reason: RetryReason, wait: Wait) -> RetryDecision<&'static str> {
        RetryDecision::Retry {
            reason,
            wait,
            endpoint: "other",
        }
    }

    /// Name, attempt, environment, decision, what was asked.
    type Case = (
        &'static str,
        Attempt,
        Env,
        RetryDecision<&'static str>,
        &'static [&'static str],
    );

    #[test]
    fn decide_retry_table() {
        use AttemptResult::{Failed, NotSent, Reset, Response};
        let ms = Duration::from_millis;
        let backoff = Wait::UpTo(ms(10));
        let post = |a: Attempt| Attempt {
            idempotent: false,
            ..a
        };
        let streamed = |a: Attempt| Attempt {
            replayable: false,
            ..a
        };
        let after = |d: Option<Duration>| Env {
            retry_after: d,
            ..ready()
        };
        let both: &[&str] = &["endpoint", "token"];
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("never sent: any method", post(streamed(first(NotSent))), ready(),
                retry(RetryReason::NotSent, backoff), both),
            ("reset, idempotent and replayable", first(Reset), ready(),
                retry(RetryReason::Reset, backoff), both),
            ("reset, not idempotent", post(first(Reset)), ready(),
                RetryDecision::GiveUp(GiveUp::NotIdempotent), &[]),
            ("reset, body streamed", streamed(first(Reset)), ready(),
                RetryDecision::GiveUp(GiveUp::NotReplayable), &[]),
            ("response timeout", first(Failed), ready(),
                RetryDecision::GiveUp(GiveUp::NotRetryable), &[]),
            ("status listed", first(Response(502)), ready(),
                retry(RetryReason::Status, backoff), both),
            ("listed status ignores Retry-After", first(Response(502)), after(Some(ms(5000))),
                retry(RetryReason::Status, backoff), both),
            ("status not listed", first(Response(500)), ready(),
                RetryDecision::GiveUp(GiveUp::NotRetryable), &[]),
            ("success", first(Response(200)), ready(),
                RetryDecision::GiveUp(GiveUp::NotRetryable), &[]),
            ("status listed, not idempotent", post(first(Response(502))), ready(),
                RetryDecision::GiveUp(GiveUp::NotIdempotent), &[]),
            ("status listed, body streamed", streamed(first(Response(503))), ready(),
                RetryDecision::GiveUp(GiveUp::NotReplayable), &[]),
            ("503 without Retry-After backs off", first(Response(503)), ready(),
                retry(RetryReason::Status, backoff), both),
            ("503 Retry-After within backoff_max", first(Response(503)), after(Some(ms(1000))),
                retry(RetryReason::Status, Wait::Exactly(ms(1000))), both),
            ("503 Retry-After equal to backoff_max", first(Response(503)), after(Some(ms(2000))),
                retry(RetryReason::Status, Wait::Exactly(ms(2000))), both),
            ("503 Retry-After beyond backoff_max", first(Response(503)), after(Some(ms(3000))),
                RetryDecision::GiveUp(GiveUp::RetryAfterTooLong), &[]),
            ("last attempt", Attempt { number: 2, ..first(NotSent) }, ready(),
                RetryDecision::GiveUp(GiveUp::AttemptsExhausted), &[]),
            ("one attempt allowed (upgrade)", Attempt { max_attempts: 1, ..first(NotSent) }, ready(),
                RetryDecision::GiveUp(GiveUp::AttemptsExhausted), &[]),
            ("second retry backs off longer", Attempt { number: 2, max_attempts: 3, ..first(Reset) },
                ready(), retry(RetryReason::Reset, Wait::UpTo(ms(20))), both),
            ("no endpoint left: the budget is not asked", first(NotSent),
                Env { endpoint: false, ..ready() },
                RetryDecision::GiveUp(GiveUp::NoOtherEndpoint), &["endpoint"]),
            ("budget empty", first(NotSent), Env { token: false, ..ready() },
                RetryDecision::GiveUp(GiveUp::BudgetExhausted), both),
            ("response already streaming", Attempt { downstream_started: true, ..first(NotSent) },
                ready(), RetryDecision::GiveUp(GiveUp::DownstreamStarted), &[]),
        ];
        let policy = policy();
        for (name, attempt, mut env, want, asked) in cases {
            let got = decide_retry(&attempt, &policy, &mut env);
            assert_eq!(got, want, "{name}");
            assert_eq!(env.asked, asked, "{name}: asked");
        }
    }

    fn any_result() -> impl proptest::strategy::Strategy<Value = AttemptResult> {
        use proptest::prelude::*;
        prop_oneof![
            Just(AttemptResult::NotSent),
            Just(AttemptResult::Reset),
            Just(AttemptResult::Failed),
            prop_oneof![Just(502u16), Just(503), 100u16..600].prop_map(AttemptResult::Response),
        ]
    }

    proptest::proptest! {
        #[test]
        fn decide_retry_never_breaks_the_safety_rules(
            result in any_result(),
            downstream_started: bool,
            idempotent: bool,
            replayable: bool,
            number in 1u32..5,
            max_attempts in 1u32..5,
            retry_after in proptest::option::of(0u64..5),
            endpoint: bool,
            token: bool,
        ) {
            let attempt = Attempt {
                result, downstream_started, idempotent, replayable, number, max_attempts,
            };
            let mut env = Env {
                retry_after: retry_after.map(Duration::from_secs),
                endpoint,
                token,
                asked: Vec::new(),
            };
            let policy = policy();
            let decision = decide_retry(&attempt, &policy, &mut env);
            let retried = matches!(decision, RetryDecision::Retry { .. });
            // Never once the client has seen part of the response.
            proptest::prop_assert!(!(retried && downstream_started));
            // Never a request the endpoint may have acted on, unless doing
            // it twice is harmless and it can be sent whole.
            let may_have_arrived = result != AttemptResult::NotSent;
            proptest::prop_assert!(!(retried && may_have_arrived && !(idempotent && replayable)));
            proptest::prop_assert!(!(retried && number >= max_attempts));
            // The budget is asked at most once, and only with an endpoint
            // in hand; a retry always took a token.
            let tokens = env.asked.iter().filter(|a| **a == "token").count();
            proptest::prop_assert!(tokens <= 1);
            proptest::prop_assert!(tokens == 0 || endpoint);
            proptest::prop_assert_eq!(retried, tokens == 1 && token);
            if let RetryDecision::Retry { wait: Wait::UpTo(d) | Wait::Exactly(d), .. } = decision {
                proptest::prop_assert!(d <= policy.backoff_max);
            }
        }
    }
}
