//! Small helpers: running commands with progress lines, reading file tails, hashing.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The cargo that runs us (so the same toolchain builds everything), else `cargo` from PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// A file size for progress lines: `123456 bytes, 120.6 KiB`.
pub fn size(bytes: u64) -> String {
    format!("{bytes} bytes, {:.1} KiB", bytes as f64 / 1024.0)
}

/// Runs `cmd` in the foreground (its output goes to the terminal) under a progress banner.
pub fn run_stage(name: &str, cmd: &mut Command) -> Result<Duration> {
    println!("==> {name}");
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("{name}: cannot start {:?}", cmd.get_program()))?;
    let took = start.elapsed();
    if !status.success() {
        bail!("{name}: {status} after {}", secs(took));
    }
    println!("--> {name}: ok ({})", secs(took));
    Ok(took)
}

/// Runs `cmd` and returns its stdout; fails with its stderr if it fails.
pub fn output_of(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a text file (lossy UTF-8); empty if the file does not exist.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(file) = fs::File::open(path) else {
        return Vec::new();
    };
    let mut ring = std::collections::VecDeque::with_capacity(n + 1);
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        ring.push_back(line);
        if ring.len() > n {
            ring.pop_front();
        }
        buf.clear();
    }
    ring.into()
}

/// FNV-1a: a stable (across Rust releases) 64-bit hash for cache keys.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Compares version-like strings chunk by chunk, numbers numerically ("6.1.0-9" < "6.1.0-56").
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            ((true, nx), (true, ny)) => nx
                .trim_start_matches('0')
                .len()
                .cmp(&ny.trim_start_matches('0').len())
                .then_with(|| nx.trim_start_matches('0').cmp(ny.trim_start_matches('0'))),
            ((_, sx), (_, sy)) => sx.cmp(sy),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn version_cmp_orders_numbers_numerically() {
        assert_eq!(
            version_cmp("6.1.0-9-amd64", "6.1.0-56-amd64"),
            Ordering::Less
        );
        assert_eq!(version_cmp("6.10.0-1", "6.9.0-1"), Ordering::Greater);
        assert_eq!(version_cmp("6.1.0-56", "6.1.0-56"), Ordering::Equal);
        assert_eq!(version_cmp("6.1", "6.1.0"), Ordering::Less);
    }

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn tail_lines_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("xtask-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("log");
        fs::write(&file, "one\r\ntwo\nthree\nfour").unwrap();
        assert_eq!(tail_lines(&file, 2), vec!["three", "four"]);
        assert_eq!(tail_lines(&dir.join("missing"), 2), Vec::<String>::new());
        fs::remove_dir_all(&dir).unwrap();
    }
}
