//! Classic pcap files of RTP over UDP/IPv4/Ethernet, for SIPp's `play_pcap_audio` (which
//! takes only the UDP payloads and their timing): read one, or write one the test made.

/// Each packet of a pcap file: (capture time µs, UDP payload).
pub fn read(path: &str) -> Vec<(u64, Vec<u8>)> {
    let d = std::fs::read(path).expect("pcap");
    let u32le = |o: usize| u32::from_le_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]]);
    let link = u32le(20);
    let l2 = if link == 113 { 16 } else { 14 }; // Linux cooked, else Ethernet
    let mut off = 24;
    let mut out = Vec::new();
    while off + 16 <= d.len() {
        let at = u64::from(u32le(off)) * 1_000_000 + u64::from(u32le(off + 4));
        let incl = u32le(off + 8) as usize;
        let pkt = &d[off + 16..off + 16 + incl];
        let ip = &pkt[l2..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        out.push((at, ip[ihl + 8..].to_vec()));
        off += 16 + incl;
    }
    out
}

/// Write `packets` ((time µs, UDP payload)) as an Ethernet/IPv4/UDP pcap file.
pub fn write(path: &std::path::Path, packets: &[(u64, Vec<u8>)]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]); // zone, accuracy
    f.extend_from_slice(&65_535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (at, payload) in packets {
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[0x08, 0x00]); // IPv4
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&(ip_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        p.extend_from_slice(&40_000u16.to_be_bytes());
        p.extend_from_slice(&40_002u16.to_be_bytes());
        p.extend_from_slice(&(udp_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        f.extend_from_slice(&((at / 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&((at % 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&p);
    }
    std::fs::write(path, f).unwrap();
}
