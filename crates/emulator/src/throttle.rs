//! ARM's per-subscription token buckets, as pure arithmetic on the emulator clock.
//!
//! Azure Resource Manager throttles with token buckets per subscription (and per region and
//! principal; the emulator keeps one pair per subscription): reads 250 with 25/s refill, writes
//! 200 with 10/s refill (PROTOCOL.md section 4). A request takes one token; without one it gets
//! `429` and the seconds until a token is back.

use drsync_core::Timestamp;

/// One bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    capacity: f64,
    refill_per_sec: f64,
    last: Timestamp,
}

/// What a request got from a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Allowed; this many tokens remain.
    Allowed {
        /// Remaining whole tokens.
        remaining: u32,
    },
    /// Throttled; retry after this many whole seconds (at least 1).
    Throttled {
        /// Seconds until a token is available.
        retry_after_secs: u64,
    },
}

impl Bucket {
    /// A full bucket.
    pub fn new(capacity: u32, refill_per_sec: f64, now: Timestamp) -> Self {
        Self {
            tokens: f64::from(capacity),
            capacity: f64::from(capacity),
            refill_per_sec,
            last: now,
        }
    }

    fn refill(&mut self, now: Timestamp) {
        let elapsed = (now - self.last).num_milliseconds().max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        if now > self.last {
            self.last = now;
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Timestamp) -> Take {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Take::Allowed {
                remaining: self.tokens.floor() as u32,
            }
        } else {
            let secs = ((1.0 - self.tokens) / self.refill_per_sec).ceil().max(1.0);
            Take::Throttled {
                retry_after_secs: secs as u64,
            }
        }
    }

    /// Whole tokens left, without taking one.
    pub fn remaining(&mut self, now: Timestamp) -> u32 {
        self.refill(now);
        self.tokens.floor() as u32
    }
}

/// What kind of request a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// GET and HEAD.
    Read,
    /// PUT, PATCH, POST.
    Write,
    /// DELETE.
    Delete,
}

impl RequestClass {
    /// The class of an HTTP method.
    pub fn of(method: &str) -> Self {
        match method {
            "GET" | "HEAD" => Self::Read,
            "DELETE" => Self::Delete,
            _ => Self::Write,
        }
    }

    /// The word ARM uses in throttling messages.
    pub fn word(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
        }
    }
}

/// One subscription's buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubscriptionBuckets {
    reads: Bucket,
    writes: Bucket,
    deletes: Bucket,
}

impl SubscriptionBuckets {
    /// Full buckets with the configured limits.
    pub fn new(t: &crate::config::ThrottleConfig, now: Timestamp) -> Self {
        Self {
            reads: Bucket::new(t.read_bucket, t.read_refill_per_sec, now),
            writes: Bucket::new(t.write_bucket, t.write_refill_per_sec, now),
            deletes: Bucket::new(t.delete_bucket, t.delete_refill_per_sec, now),
        }
    }

    /// Takes a token from the bucket of `class`.
    pub fn take(&mut self, class: RequestClass, now: Timestamp) -> Take {
        match class {
            RequestClass::Read => self.reads.take(now),
            RequestClass::Write => self.writes.take(now),
            RequestClass::Delete => self.deletes.take(now),
        }
    }

    /// Remaining reads, writes and deletes (the `x-ms-ratelimit-remaining-subscription-*` headers).
    pub fn remaining(&mut self, now: Timestamp) -> [(&'static str, u32); 3] {
        [
            (
                "x-ms-ratelimit-remaining-subscription-reads",
                self.reads.remaining(now),
            ),
            (
                "x-ms-ratelimit-remaining-subscription-writes",
                self.writes.remaining(now),
            ),
            (
                "x-ms-ratelimit-remaining-subscription-deletes",
                self.deletes.remaining(now),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn drains_refills_and_says_when_to_retry() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut b = Bucket::new(3, 0.5, t0);
        assert_eq!(b.take(t0), Take::Allowed { remaining: 2 });
        assert_eq!(b.take(t0), Take::Allowed { remaining: 1 });
        assert_eq!(b.take(t0), Take::Allowed { remaining: 0 });
        assert_eq!(
            b.take(t0),
            Take::Throttled {
                retry_after_secs: 2
            }
        );
        // A retry before Retry-After is refused again.
        assert_eq!(
            b.take(t0 + Duration::seconds(1)),
            Take::Throttled {
                retry_after_secs: 1
            }
        );
        assert_eq!(
            b.take(t0 + Duration::seconds(2)),
            Take::Allowed { remaining: 0 }
        );
        // Never more than the capacity.
        assert_eq!(b.remaining(t0 + Duration::hours(1)), 3);
    }
}
