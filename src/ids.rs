//! Identifiers DCE generates: tags and branches. Unique per process (a counter) and not
//! guessable across restarts (mixed with a per-process random seed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // The address of a stack value adds ASLR entropy.
        let local = 0u8;
        splitmix(t ^ (std::process::id() as u64) << 32 ^ (&local as *const u8 as u64))
    })
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn next() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    splitmix(seed() ^ COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A From/To tag.
pub fn tag() -> String {
    format!("{:016x}", next())
}

/// A Via branch with the RFC 3261 magic cookie.
pub fn branch() -> String {
    format!("z9hG4bK{:016x}", next())
}

/// A random (version 4 layout) UUID for a call.
pub fn uuid() -> String {
    let (a, b) = (next(), next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique() {
        let a: std::collections::HashSet<String> = (0..10_000).map(|_| super::tag()).collect();
        assert_eq!(a.len(), 10_000);
        assert!(super::branch().starts_with("z9hG4bK"));
        let u = super::uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
