//! Scale and loss, from the deterministic simulator (`core/examples/sim.rs`), and the
//! criterion micro-benchmarks: both run as cargo subcommands, so the bench binary does
//! not link the simulator or criterion.

use std::path::Path;
use std::process::Command;

use super::report::{MicroRow, Report, ScaleRow};

/// Runs the simulator example at each size and records rounds, datagrams and wall time.
pub fn scale(report: &mut Report, sizes: &[usize], lookups: usize) -> Result<(), String> {
    let workspace = workspace_root();
    let example = workspace.join("core/examples/sim.rs");
    if !example.is_file() {
        report.notes.push(
            "scale: the simulator example (core/examples/sim.rs) is not in this checkout yet"
                .into(),
        );
        return Ok(());
    }
    for &nodes in sizes {
        let json = run_sim(
            &workspace,
            &[
                "--nodes",
                &nodes.to_string(),
                "--seed",
                "1",
                "--lookups",
                &lookups.to_string(),
                "--json",
            ],
        )?;
        eprintln!("  scale {nodes}: {json}");
        let v: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| format!("sim output {json:?}: {e}"))?;
        report.scale.push(ScaleRow {
            nodes,
            lookups: v["lookups"].as_u64().unwrap_or(0),
            success_rate: v["success_rate"].as_f64().unwrap_or(0.0),
            p50_rounds: v["p50_rounds"].as_f64().unwrap_or(0.0),
            p99_rounds: v["p99_rounds"].as_f64().unwrap_or(0.0),
            msgs_per_lookup: v["msgs_per_lookup"].as_f64().unwrap_or(0.0),
            wall_s: v["wall_s"].as_f64().unwrap_or(0.0),
            note: String::new(),
        });
    }
    Ok(())
}

fn run_sim(workspace: &Path, args: &[&str]) -> Result<String, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "run",
            "-q",
            "--release",
            "-p",
            "grenache-core",
            "--features",
            "sim",
            "--example",
            "sim",
            "--",
        ])
        .args(args)
        .current_dir(workspace)
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "sim {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(str::to_string)
        .ok_or_else(|| "sim printed no JSON".into())
}

/// Runs the criterion micro-benchmarks briefly and records each median.
pub fn micro(report: &mut Report) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "bench",
            "-q",
            "-p",
            "grenache-core",
            "--bench",
            "micro",
            "--",
            "--quick",
            "--noplot",
        ])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("cargo bench: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    report.micro = parse_criterion(&String::from_utf8_lossy(&output.stdout));
    Ok(())
}

/// Reads `name  time: [low mid high]` lines (the name may sit on the line before). The
/// `time:` line of a `change:` block (criterion's comparison with its last run, in
/// percent) is not a measurement and is skipped.
fn parse_criterion(text: &str) -> Vec<MicroRow> {
    let mut rows = Vec::new();
    let mut pending: Option<String> = None;
    let mut in_change = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed == "change:" {
            in_change = true;
            continue;
        }
        if let Some((name, rest)) = line.split_once("time:") {
            if std::mem::take(&mut in_change) || rest.contains('%') {
                continue;
            }
            let name = match name.trim() {
                "" => pending.take().unwrap_or_default(),
                n => n.to_string(),
            };
            let parts: Vec<&str> = rest
                .trim()
                .trim_matches(|c| c == '[' || c == ']')
                .split_whitespace()
                .collect();
            if let [_, _, mid, unit, ..] = parts.as_slice() {
                rows.push(MicroRow {
                    name,
                    time: format!("{mid} {unit}"),
                });
            }
        } else if !trimmed.is_empty() && !line.starts_with(' ') {
            pending = Some(trimmed.to_string());
        }
    }
    rows
}

/// The workspace root (this package's parent).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Lookup latency under packet loss, from the simulator: `n` nodes on a LAN-like link
/// (1 ms one way), each bootstrapping from the first; then `lookups` times an announce on
/// one node and a `get_peers` from another, timed in virtual time from the `get_peers`
/// to its result. The Node figure it is compared with (2.2 s at 10% loss) was measured
/// with network namespaces and netem; this box's kernel has no netem.
pub fn loss_latency(
    report: &mut Report,
    n: usize,
    loss: f64,
    lookups: usize,
) -> Result<(), String> {
    use grenache_core::dht::Key;
    use grenache_core::sim::{PathConfig, Sim};
    use rand::Rng as _;
    use rand::SeedableRng as _;
    use std::time::{Duration, Instant};

    let mut sim = Sim::new(7, Instant::now());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    sim.set_link(PathConfig::new(Duration::from_millis(1)).with_loss(loss));
    sim.set_wait_limit(Duration::from_secs(60));
    let first = sim.spawn(None);
    let mut nodes = vec![first];
    for _ in 1..n {
        let addr = sim.spawn(None);
        sim.command(addr, |node, now| node.bootstrap(now, &[first]))
            .ok_or("sim: spawn failed")?;
        nodes.push(addr);
    }
    sim.run_for(Duration::from_secs(30));
    let mut samples = Vec::new();
    let mut failed = 0;
    for i in 0..lookups {
        let a = nodes[rng.random_range(0..nodes.len())];
        let mut b = nodes[rng.random_range(0..nodes.len())];
        while b == a {
            b = nodes[rng.random_range(0..nodes.len())];
        }
        let name = Key::new(format!("loss-{i}").as_bytes()).ok_or("bad key")?;
        let announce = sim
            .command(a, |node, now| node.announce(now, name.clone(), Some(4000)))
            .ok_or("sim: announce")?;
        let _ = sim.wait_for(a, announce);
        let query = sim
            .command(b, |node, now| node.get_peers(now, name.clone()))
            .ok_or("sim: get_peers")?;
        let result = sim.wait_for(b, query);
        let record = sim.record(b, query).ok_or("sim: no record")?;
        match (result, record.finished) {
            (Some(Ok(_)), Some(done)) => samples.push(done.saturating_sub(record.issued)),
            _ => failed += 1,
        }
    }
    let latencies = super::stats::Latencies::from_durations(&samples);
    report.loss.push(super::report::LossRow {
        nodes: n,
        loss,
        lookups,
        failed,
        p50: latencies.p50(),
        p90: latencies.percentile(90.0),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_criterion_lines_with_names_on_their_own_line() {
        let text = "krpc_decode/ping        time:   [1.0516 µs 1.0562 µs 1.0574 µs]\n\
                    krpc_decode/r_nodes_token\n                        time:   [1.4000 µs 1.4649 µs 1.4811 µs]\n\
                    \x20                       thrpt:  [675.15 Kelem/s 682.63 Kelem/s 714.28 Kelem/s]\n";
        let rows = parse_criterion(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "krpc_decode/ping");
        assert_eq!(rows[0].time, "1.0562 µs");
        assert_eq!(rows[1].name, "krpc_decode/r_nodes_token");
    }

    #[test]
    fn skips_the_time_line_of_a_change_block() {
        let text = "krpc_decode/find_node   time:   [620.11 ns 626.96 ns 634.50 ns]\n\
                    \x20                       change:\n\
                    \x20                              time:   [\u{2212}61.402% \u{2212}61.109% \u{2212}60.807%] (p = 0.00 < 0.05)\n\
                    krpc_decode/ping        time:   [520.00 ns 524.00 ns 530.00 ns]\n";
        let rows = parse_criterion(text);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["krpc_decode/find_node", "krpc_decode/ping"]);
        assert_eq!(rows[1].time, "524.00 ns");
    }
}
