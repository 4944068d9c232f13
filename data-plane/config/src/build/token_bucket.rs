//! Token buckets (`envoy.type.v3.TokenBucket`): the rate of access logs' `process_ratelimit`
//! filters, validated as Envoy's local rate limiter validates them.

use envoy_types::pb::envoy::r#type::v3::TokenBucket;

use super::{At, Invalid, duration, unsupported};
use crate::{MIN_FILL_INTERVAL, TokenBucketConfig};

// === impl TokenBucketConfig ===

impl TokenBucketConfig {
    /// Translates a `TokenBucket` resource; refuses what Envoy refuses: `max_tokens` 0 (its
    /// validation: `gt: 0`), a `tokens_per_fill` of 0 (`gt: 0`), no `fill_interval`
    /// (required), or one below [`MIN_FILL_INTERVAL`].
    pub fn from_xds(bucket: &TokenBucket) -> Result<TokenBucketConfig, Invalid> {
        let TokenBucket {
            max_tokens,
            tokens_per_fill,
            fill_interval,
        } = bucket;
        if *max_tokens == 0 {
            return Err(unsupported("max_tokens", "must be more than zero"));
        }
        let tokens_per_fill = match tokens_per_fill {
            None => 1,
            Some(v) if v.value == 0 => {
                return Err(unsupported("tokens_per_fill", "must be more than zero"));
            }
            Some(v) => v.value,
        };
        let Some(fill_interval) = fill_interval else {
            return Err(unsupported("fill_interval", "is required"));
        };
        let fill_interval = duration(fill_interval).at("fill_interval")?;
        if fill_interval < MIN_FILL_INTERVAL {
            // Envoy's local rate limiter: "fill timer must be >= 50ms".
            return Err(unsupported("fill_interval", "must be at least 50ms"));
        }
        Ok(TokenBucketConfig {
            max_tokens: *max_tokens,
            tokens_per_fill,
            fill_interval,
        })
    }
}
