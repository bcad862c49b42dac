//! The seeded generators of the suite: [`Rng`], a small xorshift generator
//! for choices (each thread its own, seeded by its index), and [`pattern`],
//! byte streams that make any reordering, loss or duplication visible. The
//! differential test draws its programs from proptest instead (seeded by
//! `PROPTEST_RNG_SEED`, its failures replayed from its regression file).

/// A small xorshift generator; the same seed gives the same choices.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (not zero: xorshift never leaves it).
    pub fn new(seed: u64) -> Rng {
        assert_ne!(
            seed, 0,
            "a xorshift generator seeded with zero yields zeroes only"
        );
        Rng(seed)
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser.
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` bytes of the pattern named `seed`, from position `start`. Distinct
/// seeds give unrelated streams; no pattern repeats within a stream, so a
/// piece moved, lost or sent twice shows at the first byte that differs.
pub fn pattern(seed: u64, start: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let seed = mix(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let mut p = start;
    let end = start + len as u64;
    while p < end {
        let word = mix(seed ^ (p >> 3)).to_le_bytes();
        let from = (p & 7) as usize;
        let take = (8 - from).min((end - p) as usize);
        out.extend_from_slice(&word[from..from + take]);
        p += take as u64;
    }
    out
}
