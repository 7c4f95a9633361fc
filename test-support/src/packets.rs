//! Plain (unprotected) packets for the tests of the security layer and the transports.

/// A plain RTP packet: version 2, payload type 96, SSRC 0xdeadbeef, sequence number `seq`
/// and 100 payload bytes.
pub fn rtp(seq: u16) -> Vec<u8> {
    let mut packet = vec![0x80, 96];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&1234u32.to_be_bytes());
    packet.extend_from_slice(&0xdead_beefu32.to_be_bytes());
    packet.extend_from_slice(&[7u8; 100]);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_has_a_12_byte_header_with_the_sequence_number() {
        let packet = rtp(0x0102);
        assert_eq!(packet.len(), 12 + 100);
        assert_eq!(&packet[..4], &[0x80, 96, 1, 2]);
        assert_eq!(&packet[8..12], &0xdead_beefu32.to_be_bytes());
    }
}
