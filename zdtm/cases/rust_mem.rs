//! zdtm-rust-mem: Rust heap state survives checkpoint/restore.
//!
//! Builds a Vec of pseudo-random u64 (16 MiB by default, `--mb=N`), a
//! HashMap<String, u64> (its RandomState keys live in memory too, so the
//! iteration order must not change), a boxed `dyn Fn` closure that captures
//! heap data and a boxed `dyn FnMut` counter. After restore every value is
//! recomputed from the seed and compared.

#[path = "../lib/zdtm.rs"]
mod zdtm;

use std::collections::HashMap;

const MAP_ENTRIES: u64 = 20_000;

fn key(i: u64) -> String {
    format!("key-{i:08}-{}", i.wrapping_mul(2_654_435_761) % 1000)
}

fn expected_map(seed: u64) -> Vec<(String, u64)> {
    let mut rng = zdtm::Rng::new(seed ^ 0x5151);
    (0..MAP_ENTRIES).map(|i| (key(i), rng.next_u64())).collect()
}

fn order_digest(map: &HashMap<String, u64>) -> u32 {
    map.keys()
        .fold(!0u32, |crc, k| zdtm::crc32(crc, k.as_bytes()))
}

fn main() {
    let opts = zdtm::init_with(&[zdtm::Opt::new(
        "mb",
        zdtm::Kind::Uint,
        "MiB of random data in the Vec (default 16)",
        false,
    )]);
    let mb: usize = opts.parse("mb").unwrap_or(16);
    if mb == 0 || mb > 16384 {
        zdtm::test_msg!("ERR: --mb={mb} is out of range");
        std::process::exit(1);
    }
    let seed = zdtm::random_seed();
    zdtm::test_msg!("seed {seed:#x}, {mb} MiB");

    // A Vec with pseudo-random data.
    let words = mb * 1024 * 1024 / 8;
    let mut rng = zdtm::Rng::new(seed);
    let data: Vec<u64> = (0..words).map(|_| rng.next_u64()).collect();

    // A HashMap.
    let map: HashMap<String, u64> = expected_map(seed).into_iter().collect();
    let order = order_digest(&map);

    // Boxed closures: one capturing heap data, one with mutable state.
    let table: Vec<u64> = (0..256u64)
        .map(|i| i.wrapping_mul(seed | 1).rotate_left((i % 63) as u32))
        .collect();
    let salt = seed.rotate_left(17);
    let mix: Box<dyn Fn(u64) -> u64> =
        Box::new(move |x| table[(x & 0xff) as usize] ^ x.wrapping_mul(salt | 1));
    let mut n = 0u64;
    let mut counter: Box<dyn FnMut() -> u64> = Box::new(move || {
        n += 1;
        n
    });
    for _ in 0..3 {
        counter();
    }
    let mixed: Vec<u64> = (0..1000u64).map(|x| mix(x.wrapping_mul(0x9e37))).collect();

    zdtm::daemon();
    zdtm::wait_sig();

    // The Vec.
    let mut rng = zdtm::Rng::new(seed);
    if data.len() != words {
        zdtm::fail!("Vec length {} != {}", data.len(), words);
        std::process::exit(1);
    }
    let bad: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != rng.next_u64())
        .map(|(i, _)| i)
        .collect();
    if !bad.is_empty() {
        zdtm::test_msg!(
            "{} of {} words differ; first at index {} ({:p})",
            bad.len(),
            words,
            bad[0],
            &data[bad[0]]
        );
        zdtm::fail!("Vec contents changed");
        std::process::exit(1);
    }

    // The HashMap.
    if map.len() as u64 != MAP_ENTRIES {
        zdtm::fail!(
            "HashMap has {} entries, expected {}",
            map.len(),
            MAP_ENTRIES
        );
        std::process::exit(1);
    }
    for (k, v) in expected_map(seed) {
        match map.get(&k) {
            Some(got) if *got == v => {}
            Some(got) => {
                zdtm::fail!("HashMap[{k}] = {got:#x}, expected {v:#x}");
                std::process::exit(1);
            }
            None => {
                zdtm::fail!("HashMap lost the key {k}");
                std::process::exit(1);
            }
        }
    }
    if order_digest(&map) != order {
        zdtm::fail!("HashMap iteration order changed");
        std::process::exit(1);
    }

    // The closures.
    let again: Vec<u64> = (0..1000u64).map(|x| mix(x.wrapping_mul(0x9e37))).collect();
    if again != mixed {
        zdtm::fail!("the boxed Fn closure returns different values");
        std::process::exit(1);
    }
    let c = counter();
    if c != 4 {
        zdtm::fail!("the boxed FnMut counter returned {c}, expected 4");
        std::process::exit(1);
    }

    zdtm::pass();
}
