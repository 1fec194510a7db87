//! The stable-toolchain run of the fuzz harness (`xenrpc_proto::fuzzing::run_server_case`, the
//! same function the cargo-fuzz target in `fuzz/` calls): a deterministic pseudo-random corpus
//! of 20,000 cases from a fixed seed. `XENRPC_FUZZ_CASES` and `XENRPC_FUZZ_SEED` override the
//! count and the seed.

use xenrpc_proto::fuzzing::run_server_case;

/// splitmix64: deterministic and well mixed, enough for a replay corpus.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn replay_seeded_corpus_through_the_fuzz_harness() {
    let cases = env_or("XENRPC_FUZZ_CASES", 20_000);
    let mut rng = SplitMix(env_or("XENRPC_FUZZ_SEED", 0x5EED_0FC0_FFEE));
    let mut input = Vec::new();
    let (mut refused, mut broken, mut requests, mut ok) = (0u64, 0u64, 0u64, 0u64);
    for case in 0..cases {
        // Lengths from empty to a few pages, biased short; the first byte is the mode.
        let len = match rng.next() % 4 {
            0 => rng.next() % 64,
            1 => rng.next() % 1024,
            _ => rng.next() % 6000,
        } as usize;
        input.clear();
        while input.len() < len {
            input.extend_from_slice(&rng.next().to_le_bytes());
        }
        input.truncate(len);
        // Mostly plausible modes (valid magic; half of them with decoded headers).
        if let Some(mode) = input.first_mut() {
            if case % 8 != 0 {
                *mode &= 0x7F;
            }
        }
        let report = run_server_case(&input);
        refused += u64::from(report.attach_refused);
        broken += u64::from(report.broken);
        requests += report.requests;
        ok += report.ok;
    }
    println!(
        "{cases} cases: {refused} refused at attach, {broken} broken, {requests} requests, {ok} ok"
    );
    // The corpus must actually reach the handlers, or this test proves little.
    assert!(
        requests > cases && ok > cases / 10,
        "corpus too shallow: {requests} requests, {ok} ok"
    );
}
