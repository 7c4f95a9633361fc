//! Extension of wire counters (16-bit sequence numbers, 32-bit timestamps) to 64 bits.
//!
//! The first value of a stream is placed one full cycle above zero, so a packet reordered to
//! before the first one still extends to a valid (smaller) value instead of underflowing.

use std::time::Duration;

use crate::{ClockRate, RtpTime, SeqNo};

/// Extends `wire` to the 64-bit value closest to `previous` (RFC 3550 A.1 without probation,
/// which lives in [`InboundRtp`](crate::stream::InboundRtp)).
pub fn extend_u16(previous: Option<SeqNo>, wire: u16) -> SeqNo {
    let Some(SeqNo(previous)) = previous else {
        return SeqNo(u64::from(wire) + (1 << 16));
    };
    let delta = i64::from(wire.wrapping_sub(previous as u16) as i16);
    SeqNo(previous.saturating_add_signed(delta))
}

/// Extends a 32-bit RTP timestamp to the 64-bit value closest to `previous`.
pub fn extend_u32(previous: Option<RtpTime>, wire: u32) -> RtpTime {
    let Some(RtpTime(previous)) = previous else {
        return RtpTime(u64::from(wire) + (1 << 32));
    };
    let delta = i64::from(wire.wrapping_sub(previous as u32) as i32);
    RtpTime(previous.saturating_add_signed(delta))
}

/// Media-clock ticks elapsed in `elapsed` at `rate`.
pub fn ticks(elapsed: Duration, rate: ClockRate) -> u64 {
    (elapsed.as_micros() * u128::from(rate.0) / 1_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_extension_table() {
        // (previous extended, wire, expected extended)
        let base = 1u64 << 16;
        let rows: &[(Option<u64>, u16, u64)] = &[
            (None, 0, base),
            (None, 65535, base + 65535),
            (Some(base + 65535), 0, base + 65536),
            (Some(base + 65534), 1, base + 65537),
            (Some(base + 65536), 65535, base + 65535),
            (Some(base + 10), 5, base + 5),
            (Some(base + 10), 10 + 32767, base + 10 + 32767),
            (
                Some(base + 10),
                10u16.wrapping_add(32768),
                base + 10 - 32768,
            ),
            (Some(0), 65535, 0),
        ];
        for &(prev, wire, want) in rows {
            assert_eq!(
                extend_u16(prev.map(SeqNo), wire),
                SeqNo(want),
                "{prev:?} {wire}"
            );
        }
    }

    #[test]
    fn ts_extension_table() {
        let base = 1u64 << 32;
        let rows: &[(Option<u64>, u32, u64)] = &[
            (None, 0, base),
            (Some(base + u64::from(u32::MAX)), 0, 2 * base),
            (Some(2 * base + 100), u32::MAX - 100, 2 * base - 101),
            (Some(base + 3000), 6000, base + 6000),
        ];
        for &(prev, wire, want) in rows {
            assert_eq!(
                extend_u32(prev.map(RtpTime), wire),
                RtpTime(want),
                "{prev:?} {wire}"
            );
        }
    }

    #[test]
    fn seq_extension_is_monotonic_over_many_wraps_with_any_start_and_step() {
        for start in [0u16, 1, 1000, 65000, 65535] {
            for step in [1u16, 7, 100, 1000, 32767] {
                let mut ext = extend_u16(None, start);
                let mut wire = start;
                for _ in 0..300_000 / usize::from(step).max(1) + 10 {
                    wire = wire.wrapping_add(step);
                    let next = extend_u16(Some(ext), wire);
                    assert_eq!(next.0, ext.0 + u64::from(step));
                    assert_eq!(next.wire(), wire);
                    ext = next;
                }
            }
        }
    }

    #[test]
    fn ts_extension_is_monotonic_across_wraps() {
        for start in [0u32, u32::MAX - 5000, u32::MAX] {
            let mut ext = extend_u32(None, start);
            let mut wire = start;
            for step in (0..20_000u32).map(|i| 1 + (i * 7919) % 90_000) {
                wire = wire.wrapping_add(step);
                let next = extend_u32(Some(ext), wire);
                assert_eq!(next.0, ext.0 + u64::from(step));
                ext = next;
            }
        }
    }
}
