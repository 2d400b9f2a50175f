//! The retry budget of one service: tower's [`TpsBudget`] (Finagle's and
//! Linkerd's model). Every request deposits once; every retry after a sent
//! attempt withdraws; the balance is `percent`% of the requests of the last
//! `ttl` plus a reserve of `min_retries_per_second × ttl`. A retry storm
//! against a failing service is thereby capped at a fraction of the load.
//!
//! Defaults (contract B, Linkerd's `retryBudget`): 20 %, 10 retries/s
//! minimum, ttl 10 s. The clock is tokio's (paused time in tests).

use std::time::Duration;

use serde::Serialize;
use tower::retry::budget::{Budget, TpsBudget};

/// Default `budget.percent`.
pub const DEFAULT_BUDGET_PERCENT: u32 = 20;
/// Default `budget.min_retries_per_second`.
pub const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 10;
/// Default `budget.ttl_ms`: 10 s.
pub const DEFAULT_BUDGET_TTL: Duration = Duration::from_secs(10);
/// Largest `budget.percent` (tower's bound: 1000 retries per deposit would
/// be 100000 %; 1000 % is already no budget at all).
pub const MAX_BUDGET_PERCENT: u32 = 1_000;
/// Smallest and largest `budget.ttl` (tower's and Finagle's bounds).
pub const BUDGET_TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(60));
/// Largest `budget.min_retries_per_second`.
pub const MAX_MIN_RETRIES_PER_SECOND: u32 = 1_000_000;

/// A budget config; valid by construction ([`BudgetConfig::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BudgetConfig {
    percent: u32,
    min_retries_per_second: u32,
    #[serde(rename = "ttl_ms", serialize_with = "super::ms")]
    ttl: Duration,
}

/// Why a budget config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// `percent` above [`MAX_BUDGET_PERCENT`].
    #[error("percent {0} is above {MAX_BUDGET_PERCENT}")]
    Percent(u32),
    /// `ttl` outside [`BUDGET_TTL_RANGE`].
    #[error("ttl {0:?} is outside 1 s..=60 s")]
    Ttl(Duration),
    /// `min_retries_per_second` above [`MAX_MIN_RETRIES_PER_SECOND`].
    #[error("min_retries_per_second {0} is above {MAX_MIN_RETRIES_PER_SECOND}")]
    MinRetries(u32),
}

/// One service's budget and the config it was built from.
pub struct RetryBudget {
    config: BudgetConfig,
    tps: TpsBudget,
}

impl BudgetConfig {
    /// A config allowing `percent`% of requests as retries plus
    /// `min_retries_per_second`, over a window of `ttl`.
    ///
    /// # Errors
    /// See [`BudgetError`].
    pub fn new(
        percent: u32,
        min_retries_per_second: u32,
        ttl: Duration,
    ) -> Result<BudgetConfig, BudgetError> {
        if percent > MAX_BUDGET_PERCENT {
            return Err(BudgetError::Percent(percent));
        }
        if ttl < BUDGET_TTL_RANGE.0 || ttl > BUDGET_TTL_RANGE.1 {
            return Err(BudgetError::Ttl(ttl));
        }
        if min_retries_per_second > MAX_MIN_RETRIES_PER_SECOND {
            return Err(BudgetError::MinRetries(min_retries_per_second));
        }
        Ok(BudgetConfig {
            percent,
            min_retries_per_second,
            ttl,
        })
    }

    /// Retries allowed per request, percent.
    pub fn percent(&self) -> u32 {
        self.percent
    }

    /// Retries allowed per second regardless of load.
    pub fn min_retries_per_second(&self) -> u32 {
        self.min_retries_per_second
    }

    /// How long a deposit counts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            percent: DEFAULT_BUDGET_PERCENT,
            min_retries_per_second: DEFAULT_MIN_RETRIES_PER_SECOND,
            ttl: DEFAULT_BUDGET_TTL,
        }
    }
}

impl RetryBudget {
    /// A fresh budget (full reserve, no deposits).
    pub fn new(config: BudgetConfig) -> Self {
        // Within tower's asserted bounds by construction of BudgetConfig.
        let tps = TpsBudget::new(
            config.ttl,
            config.min_retries_per_second,
            config.percent as f32 / 100.0,
        );
        RetryBudget { config, tps }
    }

    /// The config it was built from.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Records one request (call once per request, not per attempt).
    pub fn deposit(&self) {
        self.tps.deposit();
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.tps.withdraw()
    }
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.config)
            .field("tps", &self.tps)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &RetryBudget) -> u32 {
        let mut n = 0;
        while n < 100_000 && b.withdraw() {
            n += 1;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_is_min_per_second_times_ttl() {
        let b = RetryBudget::new(BudgetConfig::default());
        assert_eq!(drain(&b), 10 * 10, "10 retries/s over a 10 s ttl");
    }

    #[tokio::test(start_paused = true)]
    async fn twenty_percent_of_requests_are_added_to_the_reserve() {
        let b = RetryBudget::new(BudgetConfig::new(20, 0, Duration::from_secs(10)).unwrap());
        assert!(!b.withdraw(), "no requests, no reserve: no retry");
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(drain(&b), 20, "20 % of 100 requests");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_ttl_and_withdrawals_too() {
        let b = RetryBudget::new(BudgetConfig::new(20, 0, Duration::from_secs(10)).unwrap());
        for _ in 0..50 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!b.withdraw(), "the deposits of more than ttl ago are gone");

        let b = RetryBudget::new(BudgetConfig::new(0, 1, Duration::from_secs(1)).unwrap());
        assert!(b.withdraw());
        assert!(!b.withdraw(), "one retry per second");
        tokio::time::advance(Duration::from_millis(1_100)).await;
        assert!(b.withdraw(), "the window moved on: the reserve is back");
    }

    #[test]
    fn configs_outside_towers_bounds_are_refused_not_panicked_on() {
        assert_eq!(
            BudgetConfig::new(1_001, 0, Duration::from_secs(10)),
            Err(BudgetError::Percent(1_001))
        );
        assert!(BudgetConfig::new(20, 0, Duration::from_millis(999)).is_err());
        assert!(BudgetConfig::new(20, 0, Duration::from_secs(61)).is_err());
        assert!(BudgetConfig::new(20, u32::MAX, Duration::from_secs(60)).is_err());
        // The extremes build.
        for (p, m, t) in [(0, 0, 1), (1_000, MAX_MIN_RETRIES_PER_SECOND, 60)] {
            let c = BudgetConfig::new(p, m, Duration::from_secs(t)).unwrap();
            let _ = RetryBudget::new(c);
        }
    }
}
