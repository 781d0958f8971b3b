//! Identifiers DCE generates — tags, branches, Call-IDs, call UUIDs — from the operating
//! system's cryptographic random number generator (RFC 3261 §19.3: tags and Call-IDs must be
//! cryptographically random; a guessable branch or tag lets a third party forge requests inside
//! a dialog).
//!
//! The sans-IO cores never call a global generator: the driver hands them an [`Ids`] (the OS
//! generator in production, [`Ids::deterministic`] in simulations that must be repeatable).
//! The free functions below are for code outside the cores (the demo, tools, tests).

use std::cell::RefCell;

/// Where random bits come from.
pub trait RandomSource: Send {
    /// Fill `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// The OS generator (`getrandom`), read 4 KiB at a time so an id costs no system call.
pub struct OsRandom {
    buf: Box<[u8; 4096]>,
    pos: usize,
}

impl Default for OsRandom {
    fn default() -> Self {
        OsRandom {
            buf: Box::new([0; 4096]),
            pos: 4096,
        }
    }
}

impl RandomSource for OsRandom {
    fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.buf.len() {
                if let Err(e) = getrandom::fill(&mut self.buf[..]) {
                    // The OS generator failing is not something to route calls around.
                    panic!("the OS random number generator failed: {e}");
                }
                self.pos = 0;
            }
            let n = (out.len() - done).min(self.buf.len() - self.pos);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            // Bytes handed out are not kept.
            self.buf[self.pos..self.pos + n].fill(0);
            self.pos += n;
            done += n;
        }
    }
}

/// A repeatable sequence (splitmix64), for simulations only: never cryptographic.
struct Sequence(u64);

impl RandomSource for Sequence {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = self.0;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// The id generator a core is given.
pub struct Ids(Box<dyn RandomSource>, Option<u8>);

impl Default for Ids {
    fn default() -> Self {
        Ids::os()
    }
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ids")
    }
}

fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

impl Ids {
    /// Ids from the OS generator (production).
    pub fn os() -> Ids {
        Ids(Box::new(OsRandom::default()), None)
    }

    /// A repeatable, NOT random sequence from `seed`: simulations and tests only.
    pub fn deterministic(seed: u64) -> Ids {
        Ids(Box::new(Sequence(seed)), None)
    }

    /// Ids from any source.
    pub fn from_source(src: Box<dyn RandomSource>) -> Ids {
        Ids(src, None)
    }

    /// These ids, with every tag, branch and Call-ID starting with `shard` (two hex digits):
    /// responses and in-dialog requests then say which SIP worker owns them
    /// ([`crate::transport::dispatch`]). The rest stays random.
    pub fn sharded(self, shard: u8) -> Ids {
        Ids(self.0, Some(shard))
    }

    /// The shard these ids name, if any.
    pub fn shard(&self) -> Option<u8> {
        self.1
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.0.fill(&mut b);
        if let Some(s) = self.1 {
            b[0] = s;
        }
        b
    }

    /// A From/To tag: 64 random bits (RFC 3261 §19.3 asks for at least 32).
    pub fn tag(&mut self) -> String {
        hex(&self.bytes::<8>())
    }

    /// A Via branch with the RFC 3261 magic cookie and 96 random bits.
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK{}", hex(&self.bytes::<12>()))
    }

    /// A Call-ID for a leg DCE starts: 128 random bits `@host`.
    pub fn call_id(&mut self, host: &str) -> String {
        format!("{}@{host}", hex(&self.bytes::<16>()))
    }

    /// A random number (SRV weighted choice, RFC 2782); never shard-marked.
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }

    /// A random (version 4) UUID for a call.
    pub fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        self.0.fill(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex(&b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

thread_local! {
    static LOCAL: RefCell<Ids> = RefCell::new(Ids::os());
}

/// A From/To tag from the OS generator (outside the cores).
pub fn tag() -> String {
    LOCAL.with(|i| i.borrow_mut().tag())
}

/// A Via branch from the OS generator (outside the cores).
pub fn branch() -> String {
    LOCAL.with(|i| i.borrow_mut().branch())
}

/// A call UUID from the OS generator (outside the cores).
pub fn uuid() -> String {
    LOCAL.with(|i| i.borrow_mut().uuid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_well_formed_and_not_a_counter() {
        let a: std::collections::HashSet<String> = (0..10_000).map(|_| tag()).collect();
        assert_eq!(a.len(), 10_000);
        assert_eq!(tag().len(), 16);
        let b = branch();
        assert!(b.starts_with("z9hG4bK") && b.len() == 7 + 24, "{b}");
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        // Consecutive ids share no structure a counter would leave: about half the bits
        // differ between neighbours.
        let mut ids = Ids::os();
        let mut differing = 0u32;
        let mut prev = u64::from_str_radix(&ids.tag(), 16).unwrap();
        for _ in 0..1000 {
            let t = u64::from_str_radix(&ids.tag(), 16).unwrap();
            differing += (t ^ prev).count_ones();
            prev = t;
        }
        let mean = f64::from(differing) / 1000.0;
        assert!((28.0..36.0).contains(&mean), "mean differing bits {mean}");
    }

    #[test]
    fn the_os_source_refills_across_its_buffer() {
        let mut r = OsRandom::default();
        let mut big = vec![0u8; 10_000];
        r.fill(&mut big);
        // 10,000 random bytes are not all zero in any 4 KiB-aligned stretch.
        for chunk in big.chunks(4096) {
            assert!(chunk.iter().any(|b| *b != 0));
        }
    }

    #[test]
    fn deterministic_repeats() {
        let (mut a, mut b) = (Ids::deterministic(7), Ids::deterministic(7));
        assert_eq!(a.call_id("h"), b.call_id("h"));
        assert_eq!(a.uuid(), b.uuid());
        assert_ne!(a.tag(), Ids::deterministic(8).tag());
    }
}
