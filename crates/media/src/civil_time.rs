//! Calendar dates from day counts and back (proleptic Gregorian, UTC).
//!
//! Playlists (`EXT-X-PROGRAM-DATE-TIME`) and recordings (the `DATE` comment) carry wall-clock
//! dates, and tools that read them back need the inverse. Howard Hinnant's algorithms
//! ("`chrono`-Compatible Low-Level Date Algorithms") are exact for every day without tables, so
//! one copy here spares the crate a date dependency.

/// The date `days` after 1970-01-01 (before it when negative): `(year, month, day)`, month
/// 1 to 12, day 1 to 31.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    // Eras of 400 years (146,097 days) starting on 0000-03-01, so leap days end each year.
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both fit: day is 1 to 31 and month 1 to 12 by construction.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to the date `year`-`month`-`day` (negative before it): the inverse of
/// [`civil_from_days`] for valid dates. Out-of-range months or days are not refused; they
/// count on from the month's start as the algorithm does.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS`, UTC. No zone: callers add the
/// fraction they carry and the `Z`.
pub(crate) fn date_time(secs: u64) -> String {
    // u64::MAX / 86,400 fits an i64 many times over.
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        assert_eq!(days_from_civil(2026, 1, 1), 20_454);
        assert_eq!(days_from_civil(1600, 2, 29), -135_081);
    }

    /// The strings the two formatters this module replaced (in `hls.rs`, `recording.rs`) gave,
    /// checked against both before they were merged, up to the largest `u64` of seconds.
    #[test]
    fn date_times_as_before() {
        assert_eq!(date_time(0), "1970-01-01T00:00:00");
        assert_eq!(date_time(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(date_time(1_767_225_599), "2025-12-31T23:59:59");
        assert_eq!(date_time(4_107_542_400), "2100-03-01T00:00:00");
        assert_eq!(date_time(253_402_300_799), "9999-12-31T23:59:59");
        assert_eq!(date_time(253_402_300_800), "10000-01-01T00:00:00");
        assert_eq!(date_time(u64::MAX), "584554051223-11-09T07:00:15");
    }

    proptest! {
        #[test]
        fn days_and_dates_round_trip(days in -1_000_000_000i64..1_000_000_000) {
            let (year, month, day) = civil_from_days(days);
            prop_assert!((1..=12).contains(&month) && (1..=31).contains(&day));
            prop_assert_eq!(days_from_civil(year, month, day), days);
            // The next day is the next date: day + 1, or the 1st of the next month or year.
            let (y2, m2, d2) = civil_from_days(days + 1);
            prop_assert!(
                (y2, m2, d2) == (year, month, day + 1)
                    || (d2 == 1 && ((y2, m2) == (year, month + 1) || (y2, m2, month) == (year + 1, 1, 12)))
            );
        }
    }
}
