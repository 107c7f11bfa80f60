//! `xenio-bench net`: TCP throughput and small-frame packets per second through
//! netfront -> rings -> `xenio netback` (a child process) -> a TAP device in a
//! network namespace, against the same traffic between two namespaces over a
//! veth pair (the kernel's own path), interleaved in the same run.

//!
//! This module only orchestrates (`run`): [`xenio`] is the xenio path,
//! [`veth`] the baseline, [`traffic`] what both carry, [`netns`] the
//! namespaces; [`args`] and [`types`] are shared.

pub mod args;
pub mod netns;
pub mod traffic;
pub mod types;
pub mod veth;
pub mod xenio;

use crate::common::stats::summarize;
use args::NetArgs;
use types::R;
use veth::VethPath;
use xenio::XenioPath;

/// One workload's samples on both paths.
#[derive(Default)]
struct Samples {
    xenio: Vec<f64>,
    veth: Vec<f64>,
    /// (notifications, sleeps, packets) deltas on the xenio path.
    notes: Vec<(u64, u64, u64)>,
}

/// Run the benchmark.
pub fn run(a: &NetArgs) -> R<()> {
    let xenio = match &a.xenio {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .ok()
            .map(|e| e.with_file_name("xenio"))
            .filter(|p| p.is_file())
            .ok_or("no xenio binary next to xenio-bench: build it (cargo build --release -p xenio) or pass --xenio PATH")?,
    };
    eprintln!("net: starting the xenio path (netback in a namespace) and the veth baseline");
    let mut x = XenioPath::start(a, &xenio)?;
    let v = VethPath::start()?;
    let names = ["tcp-tx", "tcp-rx", "pps-tx", "pps-rx"];
    let mut s: Vec<Samples> = names.iter().map(|_| Samples::default()).collect();
    let bytes = a.tcp_mb << 20;
    let mut port = 10000u16;
    for rep in 0..a.reps.max(1) {
        for (w, name) in names.iter().enumerate() {
            port += 1;
            let before = x.counters();
            let xv = match w {
                0 => x.tcp(true, bytes, port)?,
                1 => x.tcp(false, bytes, port)?,
                2 => x.pps_tx(a.seconds)?,
                _ => x.pps_rx(a.seconds)?,
            };
            let after = x.counters();
            port += 1;
            let vv = match w {
                0 | 1 => v.tcp(bytes, port)?,
                _ => v.pps(a.seconds)?,
            };
            eprintln!(
                "net: rep {}/{}: {name}: xenio {xv:.1}, veth {vv:.1} ({})",
                rep + 1,
                a.reps.max(1),
                if w < 2 { "MB/s" } else { "packets/s" }
            );
            s[w].xenio.push(xv);
            s[w].veth.push(vv);
            s[w].notes.push((
                after.0 - before.0,
                after.1 - before.1,
                (after.2 - before.2).max(1),
            ));
        }
    }
    let backend_line = x.finish();
    println!(
        "xenio-bench net: {} rep(s), TCP {} MB per run, {} s per pps run, netback --poll-us {}",
        a.reps.max(1),
        a.tcp_mb,
        a.seconds,
        a.poll_us
    );
    println!(
        "{:<8} {:>28} {:>28} {:>22} {:>12} {:>12}",
        "workload",
        "xenio median [min..max]",
        "veth median [min..max]",
        "ratio x/veth [spread]",
        "fe notif/pkt",
        "fe sleep/pkt"
    );
    for (w, name) in names.iter().enumerate() {
        let xs = summarize(&s[w].xenio).ok_or("no samples")?;
        let vs = summarize(&s[w].veth).ok_or("no samples")?;
        let ratios: Vec<f64> = s[w]
            .xenio
            .iter()
            .zip(&s[w].veth)
            .map(|(x, v)| x / v)
            .collect();
        let rs = summarize(&ratios).ok_or("no samples")?;
        let (n, sl, p) = s[w]
            .notes
            .iter()
            .fold((0, 0, 0), |(a, b, c), t| (a + t.0, b + t.1, c + t.2));
        let unit = if w < 2 { "MB/s" } else { "pps" };
        println!(
            "{:<8} {:>28} {:>28} {:>22} {:>12.3} {:>12.3}",
            name,
            format!("{:.1} [{:.1}..{:.1}] {unit}", xs.median, xs.min, xs.max),
            format!("{:.1} [{:.1}..{:.1}] {unit}", vs.median, vs.min, vs.max),
            format!("{:.3} [{:.3}..{:.3}]", rs.median, rs.min, rs.max),
            n as f64 / p as f64,
            sl as f64 / p as f64,
        );
    }
    if !backend_line.is_empty() {
        let c = parse_backend(&backend_line);
        println!("{backend_line}");
        if let Some((pk, tx_n, rx_n)) = c {
            println!(
                "netback notifications per packet (whole run): {:.3} ({} tx + {} rx notifications, {} packets)",
                (tx_n + rx_n) as f64 / pk.max(1) as f64,
                tx_n,
                rx_n,
                pk
            );
        }
    }
    Ok(())
}

/// (packets both ways, tx notifications, rx notifications) from netback's
/// exit line.
fn parse_backend(line: &str) -> Option<(u64, u64, u64)> {
    let num_after = |key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        line[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let tx = num_after("tx ")?;
    let rx = num_after("; rx ")?;
    let ntx = num_after("notifications tx ")?;
    let nrx = num_after("notifications tx ").and_then(|_| {
        let at = line.find("notifications tx ")?;
        let rest = &line[at..];
        let r = rest.find(" rx ")? + 4;
        rest[r..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })?;
    Some((tx + rx, ntx, nrx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_netback_exit_line() {
        let l = "netback: Shutdown: tx 10 packets / 50113 bytes / 17 slots (0 rejected, 0 grant errors, 0 network drops); rx 11 packets / 46698 bytes / 18 slots (0 dropped without buffers, 0 too big, 0 grant errors); notifications tx 1 rx 5; sleeps 27";
        assert_eq!(parse_backend(l), Some((21, 1, 5)));
    }
}
