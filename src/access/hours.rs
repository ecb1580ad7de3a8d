//! Working hours: whether a moment falls within a role's allowed days and
//! hours, in the role's time zone.

use crate::policy::Hours;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Whether `now` is within `h`. A window that spans midnight
/// (`from: "22:00"`, `to: "06:00"`) belongs to the day it starts on.
pub fn allows(h: &Hours, now: jiff::Timestamp) -> bool {
    let local = now.to_zoned_datetime(h.time_zone.clone());
    let day = local.weekday().to_monday_zero_offset() as usize;
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    if h.from < h.to {
        h.days[day] && (h.from..h.to).contains(&minute)
    } else {
        (h.days[day] && minute >= h.from) || (h.days[(day + 6) % 7] && minute < h.to)
    }
}

/// `mon-fri 08:00-20:00 Asia/Shanghai`, for messages.
pub fn describe(h: &Hours) -> String {
    let days: Vec<&str> = DAY_NAMES
        .iter()
        .zip(h.days)
        .filter(|(_, on)| *on)
        .map(|(d, _)| *d)
        .collect();
    let days = if h.days == [true; 7] {
        "every day".to_string()
    } else {
        days.join(",")
    };
    let t = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    format!("{days} {}-{} {}", t(h.from), t(h.to), h.time_zone_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::OnExceed;

    fn hours(days: [bool; 7], from: u16, to: u16) -> Hours {
        Hours {
            days,
            from,
            to,
            time_zone: jiff::tz::TimeZone::get("Asia/Shanghai").unwrap(),
            time_zone_name: "Asia/Shanghai".into(),
            on_exceed: OnExceed::Block,
        }
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn office_hours_in_the_role_time_zone() {
        let weekdays = [true, true, true, true, true, false, false];
        let h = hours(weekdays, 8 * 60, 20 * 60);
        // 2026-11-24 is a Tuesday; 01:00 UTC is 09:00 in Shanghai.
        assert!(allows(&h, at("2026-11-24T01:00:00Z")));
        // 23:00 UTC Monday is 07:00 Tuesday in Shanghai: too early.
        assert!(!allows(&h, at("2026-11-23T23:00:00Z")));
        // 12:00 UTC is 20:00 in Shanghai: the end is exclusive.
        assert!(!allows(&h, at("2026-11-24T12:00:00Z")));
        // Saturday 10:00 in Shanghai.
        assert!(!allows(&h, at("2026-11-28T02:00:00Z")));
        assert_eq!(
            describe(&h),
            "mon,tue,wed,thu,fri 08:00-20:00 Asia/Shanghai"
        );
    }

    #[test]
    fn a_night_shift_spans_midnight() {
        // Monday night only: 22:00 Monday to 06:00 Tuesday.
        let h = hours(
            [true, false, false, false, false, false, false],
            22 * 60,
            6 * 60,
        );
        // Monday 23:00 Shanghai = 15:00 UTC Monday.
        assert!(allows(&h, at("2026-11-23T15:00:00Z")));
        // Tuesday 03:00 Shanghai = 19:00 UTC Monday: still the Monday shift.
        assert!(allows(&h, at("2026-11-23T19:00:00Z")));
        // Tuesday 23:00 Shanghai: Tuesday has no shift.
        assert!(!allows(&h, at("2026-11-24T15:00:00Z")));
        // Monday 12:00 Shanghai.
        assert!(!allows(&h, at("2026-11-23T04:00:00Z")));
    }
}
