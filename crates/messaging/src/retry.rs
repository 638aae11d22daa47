//! What to do with a message whose handler failed transiently: the
//! schedule itself is configuration ([`RetryPolicy`]); this is the policy
//! applied to one attempt.

use std::time::Duration;

use rand::Rng;

use crate::settings::RetryPolicy;

/// The outcome of a transient failure on some attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    /// Publish to the delay queue of `tier` (the configured delay), with a
    /// per-message expiry of `delay` (the tier less jitter); the message then
    /// comes back as attempt `next_attempt`.
    Retry {
        tier: Duration,
        delay: Duration,
        next_attempt: u32,
    },
    /// Every retry is used up: dead-letter it.
    Exhausted,
}

impl RetryPolicy {
    /// Attempts a message gets in total: the first plus one per delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// Decides what follows a transient failure of `attempt` (1-based).
    pub fn after_failure(&self, attempt: u32, rng: &mut impl Rng) -> RetryDecision {
        let index = usize::try_from(attempt.max(1) - 1).unwrap_or(usize::MAX);
        let Some(&tier) = self.delays.get(index) else {
            return RetryDecision::Exhausted;
        };
        // Jitter only shortens the delay: the tier's queue TTL is the upper
        // bound, so a per-message expiry can never be longer than it.
        let jitter = self.jitter.clamp(0.0, 1.0);
        let cut = if jitter > 0.0 {
            rng.random_range(0.0..=jitter)
        } else {
            0.0
        };
        let delay = tier.mul_f64(1.0 - cut).max(Duration::from_millis(1));
        RetryDecision::Retry {
            tier,
            delay,
            next_attempt: attempt.max(1) + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
            ],
            jitter,
        }
    }

    #[test]
    fn each_attempt_maps_to_its_delay_tier() {
        let policy = policy(0.0);
        let mut rng = rand::rng();
        for (attempt, secs) in [(1, 1), (2, 10), (3, 60)] {
            assert_eq!(
                policy.after_failure(attempt, &mut rng),
                RetryDecision::Retry {
                    tier: Duration::from_secs(secs),
                    delay: Duration::from_secs(secs),
                    next_attempt: attempt + 1,
                }
            );
        }
    }

    #[test]
    fn the_last_attempt_goes_to_the_dead_letter_queue() {
        let policy = policy(0.5);
        let mut rng = rand::rng();
        assert_eq!(policy.max_attempts(), 4);
        assert_eq!(policy.after_failure(4, &mut rng), RetryDecision::Exhausted);
        assert_eq!(policy.after_failure(9, &mut rng), RetryDecision::Exhausted);
    }

    #[test]
    fn jitter_only_shortens_a_delay_and_by_at_most_the_fraction() {
        let policy = policy(0.25);
        let mut rng = rand::rng();
        let mut seen_shorter = false;
        for _ in 0..1000 {
            let RetryDecision::Retry { tier, delay, .. } = policy.after_failure(2, &mut rng) else {
                panic!("attempt 2 of 4 must be retried");
            };
            assert_eq!(tier, Duration::from_secs(10));
            assert!(delay <= tier, "{delay:?} exceeds the tier");
            assert!(delay >= Duration::from_millis(7500), "{delay:?} too short");
            seen_shorter |= delay < tier;
        }
        assert!(seen_shorter, "jitter never applied");
    }

    #[test]
    fn no_delays_means_a_single_attempt() {
        let policy = RetryPolicy {
            delays: vec![],
            jitter: 0.0,
        };
        assert_eq!(policy.max_attempts(), 1);
        assert_eq!(
            policy.after_failure(1, &mut rand::rng()),
            RetryDecision::Exhausted
        );
    }
}
