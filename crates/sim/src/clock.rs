//! Simulated time: one tokio `Instant` origin plus the wall-clock time it corresponds to.
//!
//! All lifecycles run on `tokio::time::Instant` (so a paused test clock drives them); wall-clock
//! milliseconds are derived from that origin and only used for the `*_at` fields clients read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The simulator's time origin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    start_wall_ms: u64,
}

impl Clock {
    /// A clock whose origin is now.
    pub(crate) fn start_now() -> Self {
        let start_wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            start: Instant::now(),
            start_wall_ms,
        }
    }

    /// Time since the simulator started.
    pub(crate) fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.start)
    }

    /// Wall-clock Unix milliseconds of an instant, as the `*_at` fields carry them.
    pub(crate) fn wall_ms(&self, at: Instant) -> u64 {
        self.start_wall_ms + self.since_start(at).as_millis() as u64
    }
}

/// Formats Unix milliseconds as `YYYY-MM-DD HH:MM:SS` in UTC+7 without a zone, as the v2
/// deposit fields `created_at` / `expired_at` are written upstream.
pub(crate) fn jakarta_datetime(unix_ms: u64) -> String {
    let (date, secs_of_day) = jakarta_parts(unix_ms);
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    format!("{date} {h:02}:{m:02}:{s:02}")
}

/// `YYYYMMDDHHMMSS` in UTC+7, the stem of deposit ids.
pub(crate) fn jakarta_compact(unix_ms: u64) -> String {
    jakarta_datetime(unix_ms).replace(['-', ' ', ':'], "")
}

/// `HH:MM` in UTC+7, the provider time in h2h responses.
pub(crate) fn jakarta_hhmm(unix_ms: u64) -> String {
    jakarta_datetime(unix_ms)[11..16].to_string()
}

fn jakarta_parts(unix_ms: u64) -> (String, u64) {
    let local_secs = unix_ms / 1000 + 7 * 3600;
    let days = (local_secs / 86_400) as i64;
    let (y, mo, d) = civil_from_days(days);
    (format!("{y:04}-{mo:02}-{d:02}"), local_secs % 86_400)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats rupiah the Indonesian way, as RumahOTP does: `Rp11.240.116`.
pub fn rupiah(amount: i64) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push('.');
        }
        grouped.push(ch);
    }
    let sign = if amount < 0 { "-" } else { "" };
    format!("{sign}Rp{grouped}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jakarta_time_is_seven_hours_ahead_of_utc() {
        // 2025-11-09 09:37:50 UTC
        assert_eq!(jakarta_datetime(1_762_681_070_000), "2025-11-09 16:37:50");
        assert_eq!(jakarta_compact(1_762_681_070_000), "20251109163750");
        assert_eq!(jakarta_hhmm(1_762_681_070_000), "16:37");
    }

    #[test]
    fn rupiah_groups_thousands_with_dots() {
        assert_eq!(rupiah(11_240_116), "Rp11.240.116");
        assert_eq!(rupiah(1100), "Rp1.100");
        assert_eq!(rupiah(500), "Rp500");
        assert_eq!(rupiah(0), "Rp0");
        assert_eq!(rupiah(1_000), "Rp1.000");
    }
}
