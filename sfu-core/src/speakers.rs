//! Active speakers from RFC 6464 audio levels: each audio track's [`SpeechMeter`] counts the
//! levels its packets carry, and every [`Config::speaker_interval`](crate::Config) the worker
//! turns each meter into a smoothed loudness and ranks a room's tracks by it.
//!
//! The per-packet work is two additions and a comparison; the arithmetic (averages, the
//! dBov → linear conversion, smoothing) runs once per interval per track. Like LiveKit's audio
//! level, an interval only counts as speech when enough of its packets were loud (a click of one
//! or two loud packets among quiet ones does not), and like mediasoup's AudioLevelObserver the
//! loudness of an interval is the average of its loud packets' dBov.

use crate::TrackId;

/// One track in a room's speaker ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveSpeaker {
    /// The audio track.
    pub track: TrackId,
    /// Smoothed loudness, 1..=100 (percent of full scale amplitude, linear).
    pub level: u8,
}

/// How speech is told from silence and clicks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpeechThresholds {
    /// A packet is loud when its level is at most this many dB below overload (RFC 6464 sends
    /// 0 = loudest … 127 = silence).
    pub active_level: u8,
    /// An interval is speech when at least this percentage of its packets were loud.
    pub min_active_percent: u8,
}

impl Default for SpeechThresholds {
    fn default() -> Self {
        Self {
            active_level: 40,
            min_active_percent: 40,
        }
    }
}

/// Audio level accounting of one audio track.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SpeechMeter {
    /// Packets with a level in the current interval.
    packets: u32,
    /// Of those, loud ones.
    loud: u32,
    /// Sum of the loud packets' dBov (≤ 127 each).
    loud_dbov: u32,
    /// Smoothed linear loudness, 0.0..=1.0.
    smoothed: f32,
}

/// Weight of the newest interval in the smoothed loudness: about three intervals of memory,
/// so one quiet interval inside a sentence does not drop a speaker from the ranking.
const SMOOTHING: f32 = 0.4;
/// Below this smoothed loudness (percent) a track is not speaking.
const MIN_LEVEL: u8 = 1;

impl SpeechMeter {
    /// Accounts one packet's audio level byte (V bit ignored). The hot path: keep it tiny.
    #[inline]
    pub(crate) fn observe(&mut self, level: u8, thresholds: SpeechThresholds) {
        let dbov = u32::from(level & 0x7f);
        self.packets += 1;
        if dbov <= u32::from(thresholds.active_level) {
            self.loud += 1;
            self.loud_dbov += dbov;
        }
    }

    /// Ends an interval: folds it into the smoothed loudness and starts the next. Returns the
    /// loudness in percent (0 = not speaking).
    pub(crate) fn conclude(&mut self, thresholds: SpeechThresholds) -> u8 {
        let speech = self.loud > 0
            && self.loud * 100 >= self.packets * u32::from(thresholds.min_active_percent);
        let interval = if speech {
            let dbov = self.loud_dbov as f32 / self.loud as f32;
            10f32.powf(-dbov / 20.0)
        } else {
            0.0
        };
        self.smoothed += (interval - self.smoothed) * SMOOTHING;
        *self = Self {
            smoothed: self.smoothed,
            ..Self::default()
        };
        let percent = (self.smoothed * 100.0).round().clamp(0.0, 100.0) as u8;
        if percent < MIN_LEVEL { 0 } else { percent }
    }
}

/// Orders speakers loudest first (ties by track id, so the order is stable) and keeps at most
/// `max`.
pub(crate) fn rank(speakers: &mut Vec<ActiveSpeaker>, max: usize) {
    speakers.sort_unstable_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| a.track.to_u64().cmp(&b.track.to_u64()))
    });
    speakers.truncate(max);
}

/// Whether two rankings name the same tracks in the same order (levels may differ: a
/// level-only change is not news).
pub(crate) fn same_order(a: &[ActiveSpeaker], b: &[ActiveSpeaker]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.track == y.track)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(meter: &mut SpeechMeter, levels: &[u8]) -> u8 {
        let thresholds = SpeechThresholds::default();
        for &level in levels {
            meter.observe(level, thresholds);
        }
        meter.conclude(thresholds)
    }

    #[test]
    fn speech_rises_and_silence_decays_to_zero() {
        let mut meter = SpeechMeter::default();
        let first = interval(&mut meter, &[10; 10]);
        let second = interval(&mut meter, &[10; 10]);
        assert!(first > 0 && second > first, "{first} {second}");
        let mut last = second;
        for _ in 0..20 {
            last = interval(&mut meter, &[127; 10]);
        }
        assert_eq!(last, 0);
    }

    #[test]
    fn a_click_among_quiet_packets_is_not_speech() {
        let mut meter = SpeechMeter::default();
        assert_eq!(
            interval(&mut meter, &[0, 0, 127, 127, 127, 127, 127, 127, 127, 127]),
            0
        );
        assert_eq!(interval(&mut meter, &[]), 0, "no packets, no speech");
    }

    #[test]
    fn the_voice_activity_bit_is_ignored() {
        let mut a = SpeechMeter::default();
        let mut b = SpeechMeter::default();
        assert_eq!(
            interval(&mut a, &[0x80 | 20; 5]),
            interval(&mut b, &[20; 5])
        );
    }

    #[test]
    fn ranking_is_loudest_first_bounded_and_stable() {
        let t = |n| TrackId::from_u64(n);
        let mut speakers = vec![
            ActiveSpeaker {
                track: t(3),
                level: 10,
            },
            ActiveSpeaker {
                track: t(1),
                level: 50,
            },
            ActiveSpeaker {
                track: t(2),
                level: 10,
            },
        ];
        rank(&mut speakers, 2);
        assert_eq!(
            speakers,
            [
                ActiveSpeaker {
                    track: t(1),
                    level: 50
                },
                ActiveSpeaker {
                    track: t(2),
                    level: 10
                }
            ]
        );
        let louder = [
            ActiveSpeaker {
                track: t(1),
                level: 70,
            },
            ActiveSpeaker {
                track: t(2),
                level: 5,
            },
        ];
        assert!(same_order(&speakers, &louder));
        assert!(!same_order(&speakers, &louder[..1]));
    }
}
