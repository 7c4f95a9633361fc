//! Byte-identical interop with the reference `rtc-srtp` 0.21 in both directions, replay
//! protection, and malformed-input robustness.

use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

use super::*;

const PROFILES: [SrtpProfile; 2] = [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm];

fn master(profile: SrtpProfile) -> (Vec<u8>, Vec<u8>) {
    let key = (0..16u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let salt = (0..profile.salt_len() as u8).map(|i| i ^ 0xa5).collect();
    (key, salt)
}

fn ours(profile: SrtpProfile) -> SrtpContext {
    let (key, salt) = master(profile);
    SrtpContext::new(profile, &key, &salt).unwrap()
}

fn reference(profile: SrtpProfile, inbound: bool) -> Context {
    let (key, salt) = master(profile);
    let profile = match profile {
        SrtpProfile::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    };
    let provider = rtc_crypto::default_provider().unwrap();
    let (rtp, rtcp) = if inbound {
        (
            Some(srtp_replay_protection(1024)),
            Some(srtcp_replay_protection(128)),
        )
    } else {
        (None, None)
    };
    Context::new(&key, &salt, profile, rtp, rtcp, provider.crypto()).unwrap()
}

/// An RTP packet of `size` bytes: optional CSRCs and a one-byte header extension (RFC 8285)
/// ahead of a patterned payload.
fn rtp(ssrc: u32, seq: u16, size: usize, csrcs: u8, extension: bool) -> Vec<u8> {
    let mut p = vec![0x80 | csrcs | if extension { 0x10 } else { 0 }, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in 0..u32::from(csrcs) {
        p.extend_from_slice(&(0x1000 + c).to_be_bytes());
    }
    if extension {
        // id 1 (3 bytes) and id 3 (2 bytes) plus one padding byte: two words.
        p.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x12, 1, 2, 3, 0x31, 4, 5, 0]);
    }
    let header = p.len();
    p.extend((header..size).map(|i| (i * 7 + usize::from(seq)) as u8));
    p
}

/// A compound RTCP packet: a receiver report without blocks, then an APP packet padding the
/// whole to `size` bytes (a multiple of 4).
fn rtcp(ssrc: u32, size: usize) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    let app_words = (size - 8) / 4 - 1;
    p.extend_from_slice(&[0x80, 204]);
    p.extend_from_slice(&(app_words as u16).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"mooy");
    let len = p.len();
    p.extend((len..size).map(|i| (i * 13) as u8));
    p
}

/// Sequence numbers across the 65535 → 0 wrap, so the ROC moves to 1.
fn sequences() -> impl Iterator<Item = u16> {
    (65_530..=65_535).chain(0..6)
}

fn protect_rtp(context: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + context.profile().rtp_overhead(), 0);
    let len = context.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_eq!(len, buf.len());
    buf
}

fn protect_rtcp(context: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + context.profile().rtcp_overhead(), 0);
    let len = context.protect_rtcp(&mut buf, plain.len()).unwrap();
    assert_eq!(len, buf.len());
    buf
}

fn unprotect_rtp(context: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let len = context.unprotect_rtp(&mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

fn unprotect_rtcp(context: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let len = context.unprotect_rtcp(&mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

#[test]
fn key_derivation_matches_rfc3711_appendix_b3() {
    let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
    let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
    let prf = Aes128Enc::new_from_slice(&key).unwrap();
    assert_eq!(
        kdf::<16>(&prf, &salt, 0).to_vec(),
        hex("C61E7A93744F39EE10734AFE3FF7A087")
    );
    assert_eq!(
        kdf::<16>(&prf, &salt, 2)[..14].to_vec(),
        hex("30CBBC08863D8C85D49DB34A9AE1")
    );
    assert_eq!(
        kdf::<20>(&prf, &salt, 1).to_vec(),
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );
}

#[test]
fn rtp_protect_is_byte_identical_to_rtc_srtp_both_ways() {
    for profile in PROFILES {
        for (ssrc, csrcs, extension) in [(1, 0, false), (0xdead_beef, 2, true), (7, 0, true)] {
            for size in [160, 1200] {
                let (mut our_out, mut our_in) = (ours(profile), ours(profile));
                let mut ref_out = reference(profile, false);
                let mut ref_in = reference(profile, true);
                for seq in sequences() {
                    let plain = rtp(ssrc, seq, size, csrcs, extension);
                    let protected = protect_rtp(&mut our_out, &plain);
                    let expected = ref_out.encrypt_rtp(&plain).unwrap();
                    assert_eq!(
                        protected,
                        &expected[..],
                        "{profile:?} ssrc {ssrc} seq {seq}"
                    );
                    assert_eq!(&ref_in.decrypt_rtp(&protected).unwrap()[..], &plain[..]);
                    assert_eq!(unprotect_rtp(&mut our_in, &expected).unwrap(), plain);
                }
            }
        }
    }
}

#[test]
fn rtcp_protect_is_byte_identical_to_rtc_srtp_both_ways() {
    for profile in PROFILES {
        for ssrc in [1, 0xdead_beef] {
            for size in [16, 160, 1200] {
                let (mut our_out, mut our_in) = (ours(profile), ours(profile));
                let mut ref_out = reference(profile, false);
                let mut ref_in = reference(profile, true);
                for round in 0..5 {
                    let plain = rtcp(ssrc, size);
                    let protected = protect_rtcp(&mut our_out, &plain);
                    let expected = ref_out.encrypt_rtcp(&plain).unwrap();
                    assert_eq!(
                        protected,
                        &expected[..],
                        "{profile:?} {size} B round {round}"
                    );
                    assert_eq!(&ref_in.decrypt_rtcp(&protected).unwrap()[..], &plain[..]);
                    assert_eq!(unprotect_rtcp(&mut our_in, &expected).unwrap(), plain);
                }
            }
        }
    }
}

#[test]
fn reordered_packets_across_the_rollover_decrypt() {
    for profile in PROFILES {
        let mut ref_out = reference(profile, false);
        let packets: Vec<_> = (65_533..=65_535)
            .chain(0..4)
            .map(|seq| {
                let plain = rtp(9, seq, 200, 0, false);
                let protected = ref_out.encrypt_rtp(&plain).unwrap().to_vec();
                (plain, protected)
            })
            .collect();
        let mut our_in = ours(profile);
        for i in [0, 3, 1, 4, 2, 5, 6] {
            let (plain, protected) = &packets[i];
            assert_eq!(
                &unprotect_rtp(&mut our_in, protected).unwrap(),
                plain,
                "{i}"
            );
        }
    }
}

#[test]
fn replays_old_packets_and_tampering_are_refused() {
    for profile in PROFILES {
        let (mut out, mut inbound) = (ours(profile), ours(profile));
        let first = protect_rtp(&mut out, &rtp(5, 100, 160, 0, false));
        unprotect_rtp(&mut inbound, &first).unwrap();
        let replay = unprotect_rtp(&mut inbound, &first).unwrap_err();
        assert!(replay.is_replay(), "{replay}");

        // Jump 2000 ahead: index 100 + 2 falls out of the 1024-packet window.
        let late = protect_rtp(&mut out, &rtp(5, 102, 160, 0, false));
        let ahead = protect_rtp(&mut out, &rtp(5, 2100, 160, 0, false));
        unprotect_rtp(&mut inbound, &ahead).unwrap();
        let old = unprotect_rtp(&mut inbound, &late).unwrap_err();
        assert!(matches!(old, SrtpError::TooOld { .. }), "{old}");
        assert!(old.is_replay());

        // Within the window and not seen yet: accepted once.
        let in_window = protect_rtp(&mut out, &rtp(5, 2000, 160, 0, false));
        unprotect_rtp(&mut inbound, &in_window).unwrap();
        assert!(
            unprotect_rtp(&mut inbound, &in_window)
                .unwrap_err()
                .is_replay()
        );

        let mut tampered = protect_rtp(&mut out, &rtp(5, 2101, 160, 0, false));
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            unprotect_rtp(&mut inbound, &tampered),
            Err(SrtpError::Authentication)
        );
        tampered[20] ^= 1;
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            unprotect_rtp(&mut inbound, &tampered),
            Err(SrtpError::Authentication)
        );
        // A failed packet leaves no state behind: the genuine one still passes.
        tampered[20] ^= 1;
        unprotect_rtp(&mut inbound, &tampered).unwrap();

        // SRTCP: replay and tampering.
        let report = protect_rtcp(&mut out, &rtcp(5, 32));
        unprotect_rtcp(&mut inbound, &report).unwrap();
        assert!(
            unprotect_rtcp(&mut inbound, &report)
                .unwrap_err()
                .is_replay()
        );
        let mut tampered = protect_rtcp(&mut out, &rtcp(5, 32));
        tampered[10] ^= 0x40;
        assert_eq!(
            unprotect_rtcp(&mut inbound, &tampered),
            Err(SrtpError::Authentication)
        );
    }
}

#[test]
fn unencrypted_srtcp_is_authenticated() {
    // E = 0 packets (RFC 3711 §3.4; RFC 7714 §9.2) built by hand: the payload travels in the
    // clear but the tag still covers it.
    let plain = rtcp(3, 32);
    let word = 1u32.to_be_bytes();
    for profile in PROFILES {
        let (key, salt) = master(profile);
        let prf = Aes128Enc::new_from_slice(&key).unwrap();
        let keys = SessionKeys::derive(profile, &prf, &salt, LABEL_SRTCP_ENCRYPTION);
        let mut packet = plain.clone();
        match &keys.cipher {
            Cipher::Cm { mac, .. } => {
                packet.extend_from_slice(&word);
                let mut mac = mac.clone();
                mac.update(&packet);
                packet.extend_from_slice(&mac.finalize().into_bytes()[..CM_TAG_LEN]);
            }
            Cipher::Gcm(key) => {
                let mut aad = plain.clone();
                aad.extend_from_slice(&word);
                let nonce = gcm_rtcp_nonce(&keys.salt, 3, 1);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(&aad), &mut [])
                    .unwrap();
                packet.extend_from_slice(tag.as_ref());
                packet.extend_from_slice(&word);
            }
        }
        let mut inbound = ours(profile);
        let mut tampered = packet.clone();
        tampered[12] ^= 1;
        assert_eq!(
            unprotect_rtcp(&mut inbound, &tampered),
            Err(SrtpError::Authentication)
        );
        assert_eq!(unprotect_rtcp(&mut inbound, &packet).unwrap(), plain);
    }
}

#[test]
fn truncated_and_mutated_input_is_an_error_never_a_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for profile in PROFILES {
        let mut out = ours(profile);
        let samples = [
            protect_rtp(&mut out, &rtp(1, 1, 160, 3, true)),
            protect_rtp(&mut out, &rtp(1, 2, 40, 0, false)),
            protect_rtcp(&mut out, &rtcp(1, 16)),
        ];
        let mut inbound = ours(profile);
        for sample in &samples {
            for cut in 0..sample.len() {
                assert!(unprotect_rtp(&mut inbound, &sample[..cut]).is_err());
                assert!(unprotect_rtcp(&mut inbound, &sample[..cut]).is_err());
            }
            // Accept the genuine packet once, so a mutation that cancels out is a replay.
            let genuine = unprotect_rtp(&mut inbound, sample)
                .or_else(|_| unprotect_rtcp(&mut inbound, sample));
            assert!(genuine.is_ok());
            for _ in 0..2000 {
                let mut mutated = sample.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() % mutated.len() as u64) as usize;
                    mutated[at] ^= 1 << (next() % 8);
                }
                if next() % 4 == 0 {
                    mutated.truncate((next() % mutated.len() as u64) as usize);
                }
                assert!(unprotect_rtp(&mut inbound, &mutated).is_err());
                assert!(unprotect_rtcp(&mut inbound, &mutated).is_err());
            }
        }
        // Garbage, including lengths that pass the size checks, through the fuzz body.
        for len in 0..200 {
            let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            fuzz_srtp(&garbage);
        }
    }
}

#[test]
fn protect_refuses_a_buffer_without_room_for_the_tag() {
    for profile in PROFILES {
        let plain = rtp(1, 1, 160, 0, false);
        let mut buf = plain.clone();
        let len = buf.len();
        assert_eq!(
            ours(profile).protect_rtp(&mut buf, len),
            Err(SrtpError::BufferTooSmall)
        );
        assert_eq!(
            ours(profile).protect_rtp(&mut buf, len + 1),
            Err(SrtpError::Malformed)
        );
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn protect_refuses_an_index_reused_with_different_bytes() {
    for profile in PROFILES {
        let mut out = ours(profile);
        let mut inbound = ours(profile);
        let mut originals = Vec::new();
        for seq in 100..110 {
            let protected = protect_rtp(&mut out, &rtp(5, seq, 300, 0, true));
            assert_eq!(
                unprotect_rtp(&mut inbound, &protected).unwrap(),
                rtp(5, seq, 300, 0, true)
            );
            originals.push(protected);
        }
        // A byte-identical resend under a used index is the same ciphertext: allowed.
        assert_eq!(
            protect_rtp(&mut out, &rtp(5, 103, 300, 0, true)),
            originals[3]
        );
        // The same index with one byte changed (a rewritten header extension): refused,
        // zeroed, counted.
        let mut changed = rtp(5, 104, 300, 0, true);
        changed[17] ^= 1;
        let len = changed.len();
        changed.resize(len + profile.rtp_overhead(), 0);
        assert_eq!(
            out.protect_rtp(&mut changed, len),
            Err(SrtpError::IndexReused {
                ssrc: 5,
                index: 104
            }),
            "{profile:?}"
        );
        assert!(
            changed.iter().all(|&b| b == 0),
            "nothing usable is left behind"
        );
        assert_eq!(out.index_reuse_refused(), 1);
        // A different payload under a used index: refused.
        let mut other = rtp(5, 105, 300, 0, true);
        *other.last_mut().unwrap() ^= 0xff;
        other.resize(other.len() + profile.rtp_overhead(), 0);
        assert!(out.protect_rtp(&mut other, 300).is_err());
        // Reordered but never used (a gap filled late): allowed.
        for seq in (120..700).filter(|&s| s != 250) {
            protect_rtp(&mut out, &rtp(5, seq, 100, 0, false));
        }
        protect_rtp(&mut out, &rtp(5, 250, 100, 0, false));
        // Too far behind to be told apart from a used one: refused.
        let mut old = rtp(5, 150, 100, 0, false);
        old.resize(100 + profile.rtp_overhead(), 0);
        assert!(matches!(
            out.protect_rtp(&mut old, 100),
            Err(SrtpError::IndexReused { .. })
        ));
        assert_eq!(out.index_reuse_refused(), 3);
        // Other SSRCs are independent.
        protect_rtp(&mut out, &rtp(6, 104, 300, 0, true));
    }
}

#[test]
fn a_context_keeps_state_for_at_most_max_remote_ssrcs() {
    use super::MAX_REMOTE_SSRCS;
    for profile in PROFILES {
        let mut sender = ours(profile);
        let mut inbound = ours(profile);
        let ssrcs = MAX_REMOTE_SSRCS as u32 + 100;
        let mut refused = 0;
        for ssrc in 1..=ssrcs {
            let packet = protect_rtp(&mut sender, &rtp(ssrc, 1, 100, 0, false));
            match unprotect_rtp(&mut inbound, &packet) {
                Ok(_) => {}
                Err(SrtpError::TooManySsrcs { ssrc: s }) => {
                    assert_eq!(s, ssrc);
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
            let packet = protect_rtcp(&mut sender, &rtcp(ssrc, 40));
            match unprotect_rtcp(&mut inbound, &packet) {
                Ok(_) | Err(SrtpError::TooManySsrcs { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(refused, 100);
        assert_eq!(inbound.ssrcs(), (MAX_REMOTE_SSRCS, MAX_REMOTE_SSRCS));
        // The SSRCs that got in keep working.
        let packet = protect_rtp(&mut sender, &rtp(1, 2, 100, 0, false));
        assert!(unprotect_rtp(&mut inbound, &packet).is_ok());
        // An SSRC that does not authenticate never takes a slot, even below the cap.
        let mut fresh = ours(profile);
        let mut forged = protect_rtp(&mut sender, &rtp(9999, 1, 100, 0, false));
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(
            unprotect_rtp(&mut fresh, &forged),
            Err(SrtpError::Authentication)
        );
        assert_eq!(fresh.ssrcs(), (0, 0));
    }
}
