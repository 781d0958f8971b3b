//! National DNC at full scale: generate N numbers (default 250 million) over the NANP, build the
//! compact set, and measure memory per number and lookup time (listed and unlisted numbers).
//!
//!     cargo run --release -p dce-compliance --example dnc_scale -- [N]

use dce_compliance::NationalDnc;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A plausible NANP number: NPA and NXX 200–999.
    fn number(&mut self) -> u64 {
        let r = self.next();
        let npa = 200 + r % 800;
        let nxx = 200 + (r >> 10) % 800;
        let line = (r >> 20) % 10_000;
        npa * 10_000_000 + nxx * 10_000 + line
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(250_000_000);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let t = Instant::now();
    let numbers: Vec<u64> = (0..n).map(|_| rng.number()).collect();
    println!(
        "generated {n} numbers in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let image = NationalDnc::build(numbers);
    println!("built in {:.1} s", t.elapsed().as_secs_f64());
    let set = NationalDnc::from_bytes(image, Path::new("generated")).expect("valid image");
    println!(
        "{} distinct numbers in {:.1} MB = {:.3} bytes per number",
        set.len(),
        set.memory_bytes() as f64 / 1e6,
        set.memory_bytes() as f64 / set.len() as f64
    );
    let mut probe = Rng(0x2545_F491_4F6C_DD1D);
    let listed: Vec<u64> = (0..5_000_000).map(|_| probe.number()).collect();
    let mut other = Rng(7);
    let random: Vec<u64> = (0..5_000_000).map(|_| other.number()).collect();
    for (name, keys) in [("listed", &listed), ("random", &random)] {
        let t = Instant::now();
        let mut hits = 0u64;
        for k in keys.iter() {
            hits += set.contains(black_box(*k)) as u64;
        }
        let ns = t.elapsed().as_nanos() as f64 / keys.len() as f64;
        println!(
            "lookup {name}: {ns:.0} ns each ({hits} of {} listed)",
            keys.len()
        );
    }
}
