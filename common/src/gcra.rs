//! The GCRA rate check run inside Redis, shared by the proxy's limit store
//! (`limits.store`) and the worker's fleet-wide tenant quotas (`quota_store`).
//!
//! GCRA is the token bucket's exact equivalent: `burst` at once, then `rate` per second.
//! Time comes from Redis `TIME`, so the nodes' clocks do not matter. One key per bucket,
//! holding the theoretical arrival time in ms, expiring once the bucket is full again.

/// `KEYS[1]` bucket, `ARGV[1]` rate per second, `ARGV[2]` burst. Returns
/// `{allowed (0|1), remaining, retry_ms, reset_ms}`.
pub const SCRIPT: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local em = 1000 / rate
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + em
local allow_at = new_tat - burst * em
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return {1, math.floor((now - allow_at) / em), 0, math.ceil(new_tat - now)}
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_reads_rate_and_burst_and_returns_four_numbers() {
        assert!(super::SCRIPT.contains("tonumber(ARGV[1])"));
        assert!(super::SCRIPT.contains("tonumber(ARGV[2])"));
        assert!(super::SCRIPT.contains("redis.call('TIME')"));
        assert_eq!(super::SCRIPT.matches("return {").count(), 2);
    }
}
