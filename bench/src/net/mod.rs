//! `xenio-bench net`: TCP throughput and small-frame packets per second through
//! netfront -> rings -> `xenio netback` (a child process) -> a TAP device in a
//! network namespace, against the same traffic between two namespaces over a
//! veth pair (the kernel's own path), interleaved in the same run.

//!
//! This module only orchestrates (`run`): [`xenio`] is the xenio path,
//! [`veth`] the baseline, [`traffic`] what both carry, [`netns`] the
//! namespaces; [`args`] and [`types`] are shared.

pub mod args;
pub mod cpu;
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
    /// veth with its offloads off (TCP workloads).
    veth_off: Vec<f64>,
    /// CPU seconds per GB: xenio, veth, veth without offloads.
    cpu: [Vec<f64>; 3],
    /// (notifications, sleeps, packets) deltas on the xenio path.
    notes: Vec<(u64, u64, u64)>,
}

/// CPU seconds per GB for `cpu` seconds spent moving `bytes`.
fn per_gb(cpu: f64, bytes: u64) -> f64 {
    cpu / (bytes as f64 / 1e9)
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
    eprintln!(
        "net: starting the xenio paths (netback in namespaces: smoltcp, and the frame engine with GSO) and the veth baseline, MTU {}",
        a.mtu
    );
    let mut x = XenioPath::start(a, &xenio, false)?;
    let mut g = XenioPath::start(a, &xenio, true)?;
    let v = VethPath::start(a.mtu)?;
    let veth_off = match v.set_offloads(false).and_then(|()| v.set_offloads(true)) {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "net: veth offloads cannot be turned off ({e}): the offloads-off column is left out"
            );
            false
        }
    };
    let names = ["tcp-tx", "tcp-rx", "gso-tx", "gso-rx", "pps-tx", "pps-rx"];
    if let Some(w) = a.workloads.iter().find(|w| !names.contains(&w.as_str())) {
        return Err(format!(
            "--workloads: no workload {w:?} (there are {names:?})"
        ));
    }
    let chosen = |w: usize| a.workloads.is_empty() || a.workloads.iter().any(|n| n == names[w]);
    let mut s: Vec<Samples> = names.iter().map(|_| Samples::default()).collect();
    let bytes = a.tcp_mb << 20;
    let mut port = 10000u16;
    for rep in 0..a.reps.max(1) {
        for (w, name) in names.iter().enumerate() {
            if !chosen(w) {
                continue;
            }
            port += 1;
            let path = if w == 2 || w == 3 { &mut g } else { &mut x };
            let before = path.counters();
            let (xv, xcpu) = match w {
                0 => path.tcp(true, bytes, port)?,
                1 => path.tcp(false, bytes, port)?,
                2 => path.bulk(true, bytes, port)?,
                3 => path.bulk(false, bytes, port)?,
                4 => (path.pps_tx(a.seconds)?, f64::NAN),
                _ => (path.pps_rx(a.seconds)?, f64::NAN),
            };
            let after = path.counters();
            port += 1;
            let tcp = w < 4;
            let (vv, vcpu) = if tcp {
                v.tcp(bytes, port)?
            } else {
                (v.pps(a.seconds)?, f64::NAN)
            };
            let off = if tcp && veth_off {
                port += 1;
                v.set_offloads(false)?;
                let r = v.tcp(bytes, port);
                v.set_offloads(true)?;
                Some(r?)
            } else {
                None
            };
            eprintln!(
                "net: rep {}/{}: {name}: xenio {xv:.1}, veth {vv:.1}{} ({})",
                rep + 1,
                a.reps.max(1),
                off.map_or(String::new(), |o| format!(", veth offloads off {:.1}", o.0)),
                if tcp { "MB/s" } else { "packets/s" }
            );
            s[w].xenio.push(xv);
            s[w].veth.push(vv);
            if tcp {
                s[w].cpu[0].push(per_gb(xcpu, bytes));
                s[w].cpu[1].push(per_gb(vcpu, bytes));
            }
            if let Some((ov, ocpu)) = off {
                s[w].veth_off.push(ov);
                s[w].cpu[2].push(per_gb(ocpu, bytes));
            }
            s[w].notes.push((
                after.0 - before.0,
                after.1 - before.1,
                (after.2 - before.2).max(1),
            ));
        }
    }
    let backend_line = x.finish();
    let gso_line = g.finish();
    println!(
        "xenio-bench net: {} rep(s), TCP {} MB per run, {} s per pps run, MTU {}, netback --poll-us {}",
        a.reps.max(1),
        a.tcp_mb,
        a.seconds,
        a.mtu,
        a.poll_us
    );
    println!(
        "{:<8} {:>28} {:>28} {:>22} {:>28} {:>22} {:>12} {:>12}",
        "workload",
        "xenio median [min..max]",
        "veth median [min..max]",
        "ratio x/veth [spread]",
        "veth offloads off",
        "ratio x/veth-off",
        "fe notif/pkt",
        "fe sleep/pkt"
    );
    let med = |v: &[f64], unit: &str| -> String {
        match summarize(v) {
            Some(m) => format!("{:.1} [{:.1}..{:.1}] {unit}", m.median, m.min, m.max),
            None => "-".into(),
        }
    };
    let ratio = |x: &[f64], b: &[f64]| -> String {
        let r: Vec<f64> = x.iter().zip(b).map(|(x, v)| x / v).collect();
        match summarize(&r) {
            Some(m) => format!("{:.3} [{:.3}..{:.3}]", m.median, m.min, m.max),
            None => "-".into(),
        }
    };
    for (w, name) in names.iter().enumerate() {
        let unit = if w < 4 { "MB/s" } else { "pps" };
        if s[w].xenio.is_empty() {
            continue;
        }
        let (n, sl, p) = s[w]
            .notes
            .iter()
            .fold((0, 0, 0), |(a, b, c), t| (a + t.0, b + t.1, c + t.2));
        println!(
            "{:<8} {:>28} {:>28} {:>22} {:>28} {:>22} {:>12.3} {:>12.3}",
            name,
            med(&s[w].xenio, unit),
            med(&s[w].veth, unit),
            ratio(&s[w].xenio, &s[w].veth),
            med(&s[w].veth_off, unit),
            ratio(&s[w].xenio, &s[w].veth_off),
            n as f64 / p as f64,
            sl as f64 / p as f64,
        );
    }
    println!(
        "CPU seconds per GB (median [min..max]; xenio: frontend thread + netback + Linux socket thread; veth: both socket threads):"
    );
    for (w, name) in names.iter().enumerate().take(4) {
        if s[w].xenio.is_empty() {
            continue;
        }
        println!(
            "{:<8} xenio {:>24}   veth {:>24}   veth offloads off {:>24}",
            name,
            med(&s[w].cpu[0], "s/GB"),
            med(&s[w].cpu[1], "s/GB"),
            med(&s[w].cpu[2], "s/GB"),
        );
    }
    for (line, what) in [
        (backend_line, "smoltcp path"),
        (gso_line, "frame engine path"),
    ] {
        if line.is_empty() {
            continue;
        }
        println!("{what}: {line}");
        if let Some((pk, tx_n, rx_n)) = parse_backend(&line) {
            println!(
                "netback notifications per packet (whole run, {what}): {:.3} ({} tx + {} rx notifications, {} packets)",
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
