//! Keyframe detection from RTP payload descriptors: a subscriber joining mid-stream can only
//! start decoding at the first packet of a keyframe.

/// The codec of a track, as far as forwarding cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// Opus audio (every packet decodable).
    Opus,
    /// VP8 (RFC 7741).
    Vp8,
    /// VP9 (RFC 9628), best effort.
    Vp9,
    /// H.264 (RFC 6184), packetization-mode 0 or 1.
    H264,
    /// AV1 (AOM RTP spec), best effort.
    Av1,
    /// Anything else: forwarded, never treated as a keyframe boundary.
    Other,
}

impl Codec {
    /// Whether a late joiner must wait for a keyframe before packets are useful.
    pub fn needs_keyframe(self) -> bool {
        matches!(self, Self::Vp8 | Self::Vp9 | Self::H264 | Self::Av1)
    }
}

/// Whether `payload` is the first packet of a keyframe (or, for H.264, carries SPS or IDR).
pub fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8(payload),
        Codec::Vp9 => vp9(payload),
        Codec::H264 => h264(payload),
        Codec::Av1 => av1(payload),
        Codec::Opus | Codec::Other => false,
    }
}

/// RFC 7741 §4.2–4.3: skip the payload descriptor, then the VP8 frame tag's P bit is 0 for a
/// key frame; only meaningful at the start (S=1) of partition 0.
fn vp8(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start_of_partition || partition != 0 {
        return false;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&x) = p.get(at) else { return false };
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: 15 bits when its M bit is set, otherwise 7.
            let Some(&pid) = p.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    p.get(at).is_some_and(|tag| tag & 0x01 == 0)
}

/// RFC 9628 §4.2: P=0 (not inter-predicted) and B=1 (beginning of frame); with layer indices
/// present, only spatial layer 0 starts a decodable picture.
fn vp9(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    let inter_predicted = first & 0x40 != 0;
    let begin = first & 0x08 != 0;
    if inter_predicted || !begin {
        return false;
    }
    if first & 0x20 == 0 {
        return true;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&pid) = p.get(at) else { return false };
        at += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    p.get(at).is_some_and(|layers| (layers >> 1) & 0x07 == 0)
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184 §5: a single NAL, the NALs of a STAP-A, or the start fragment of an FU-A.
fn h264(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    match first & 0x1f {
        H264_IDR | H264_SPS => true,
        H264_STAP_A => {
            let mut at = 1;
            while let Some(size) = p.get(at..at + 2) {
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                let Some(&nal) = p.get(at + 2) else {
                    return false;
                };
                if matches!(nal & 0x1f, H264_IDR | H264_SPS) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        H264_FU_A => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, H264_IDR | H264_SPS)),
        _ => false,
    }
}

/// AV1 RTP spec §4.4: the aggregation header's N bit marks the first packet of a coded video
/// sequence, which starts with a keyframe.
fn av1(p: &[u8]) -> bool {
    p.first().is_some_and(|header| header & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_table() {
        let rows: &[(&[u8], bool)] = &[
            (&[0x10, 0x00], true),                   // S=1, PID=0, no X, tag P=0
            (&[0x10, 0x01], false),                  // interframe
            (&[0x00, 0x00], false),                  // not a partition start
            (&[0x11, 0x00], false),                  // partition 1
            (&[0x90, 0x80, 0x05, 0x00], true),       // X, I with 7-bit picture id
            (&[0x90, 0x80, 0x85, 0x01, 0x00], true), // 15-bit picture id
            (&[0x90, 0xe0, 0x85, 0x01, 0x07, 0x20, 0x00], true),
            (&[0x90, 0xe0, 0x85, 0x01, 0x07, 0x20, 0x01], false),
            (&[0x90, 0x80], false), // truncated
            (&[], false),
        ];
        for (payload, want) in rows {
            assert_eq!(is_keyframe(Codec::Vp8, payload), *want, "{payload:02x?}");
        }
    }

    #[test]
    fn h264_keyframe_table() {
        let rows: &[(&[u8], bool)] = &[
            (&[0x65, 0x88], true),                                     // IDR
            (&[0x67, 0x42], true),                                     // SPS
            (&[0x41, 0x9a], false),                                    // non-IDR slice
            (&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68], true), // STAP-A with SPS
            (&[0x78, 0x00, 0x01, 0x68, 0x00, 0x01, 0x41], false),      // STAP-A PPS + slice
            (&[0x7c, 0x85, 0x00], true),                               // FU-A start of IDR
            (&[0x7c, 0x05, 0x00], false),                              // FU-A middle
            (&[0x7c], false),
        ];
        for (payload, want) in rows {
            assert_eq!(is_keyframe(Codec::H264, payload), *want, "{payload:02x?}");
        }
    }

    #[test]
    fn vp9_and_av1_best_effort() {
        assert!(is_keyframe(Codec::Vp9, &[0x08]));
        assert!(!is_keyframe(Codec::Vp9, &[0x48]));
        assert!(is_keyframe(Codec::Vp9, &[0xa8, 0x05, 0x00]));
        assert!(
            !is_keyframe(Codec::Vp9, &[0xa8, 0x05, 0x02]),
            "spatial layer 1"
        );
        assert!(is_keyframe(Codec::Av1, &[0x18]));
        assert!(!is_keyframe(Codec::Av1, &[0x10]));
        assert!(!is_keyframe(Codec::Opus, &[0xff]));
    }
}
