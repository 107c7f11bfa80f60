//! The study's plan: the arguments with the defaults of `--quick` or the full
//! study applied, checked, and turned into configurations (native, the base
//! xenio configuration, and one-knob sweeps around it).

use crate::common::blkback::{BackendKnobs, DirectArg, ReorderArg};
use crate::common::error::{BenchError, Result};
use crate::study::args::StudyArgs;
use crate::study::types::{Config, FIO, Knob, Params, Phase, Resolved, all_phases};
use std::time::Duration;
use xenio_blkfront::Wait;

fn parse_phases(list: &[String], what: &str) -> Result<Vec<Phase>> {
    let mut v = Vec::new();
    for s in list {
        let p = Phase::parse(s).ok_or_else(|| {
            BenchError::Usage(format!(
                "{what}: unknown workload `{s}` (known: {})",
                all_phases()
                    .iter()
                    .map(|p| p.name().replace(' ', "-"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if !v.contains(&p) {
            v.push(p);
        }
    }
    // Bonnie's order, then the fio-style ones.
    v.sort();
    Ok(v)
}

fn base_knobs(a: &StudyArgs) -> BackendKnobs {
    BackendKnobs {
        ring_order: a.ring_order,
        queues: a.queues,
        indirect: a.indirect,
        persistent: !a.no_persistent,
        grant_mode: a.grant_mode,
        reorder: a.reorder,
        poll_us: a.poll_us,
        io_depth: 128,
        batch: 512,
        direct: if a.buffered {
            DirectArg::Off
        } else {
            DirectArg::On
        },
        extra: Vec::new(),
    }
}

fn reorder_name(r: ReorderArg) -> &'static str {
    match r {
        ReorderArg::Off => "off",
        ReorderArg::Sort => "sort",
        ReorderArg::Merge => "merge",
    }
}

/// Apply defaults, check the arguments, build the configurations.
pub fn resolve(a: &StudyArgs) -> Result<Resolved> {
    let q = a.quick;
    let sizes_mib = if a.sizes_mib.is_empty() {
        if q {
            vec![16, 32]
        } else {
            vec![100, 500, 1000]
        }
    } else {
        a.sizes_mib.clone()
    };
    let runs = a.runs.unwrap_or(if q { 3 } else { 50 });
    let chunk = (a.chunk_kib << 10) as usize;
    let params = Params {
        chunk,
        depth: a.depth as usize,
        seeks: a.seeks.unwrap_or(if q { 600 } else { 4000 }),
        seekers: a.seekers as usize,
        fio_bytes: a.fio_mib.unwrap_or(if q { 8 } else { 64 }) << 20,
        seed: a.seed,
    };
    let phases = if a.phases.is_empty() {
        all_phases()
    } else {
        parse_phases(&a.phases, "--phases")?
    };
    let mut sizes = Vec::new();
    for &mib in &sizes_mib {
        let bytes = mib << 20;
        let need = phases
            .iter()
            .map(|p| match p {
                Phase::Fio(i) => FIO[*i].bs as u64,
                _ => chunk as u64,
            })
            .max()
            .unwrap_or(0);
        if bytes < need * 2 {
            return Err(BenchError::Usage(format!(
                "a {mib} MiB file is too small for these workloads (blocks of {need} bytes)"
            )));
        }
        if !sizes.contains(&bytes) {
            sizes.push(bytes);
        }
    }
    let base = base_knobs(a);
    let front_poll = a
        .poll_us
        .map_or(Wait::Adaptive, |us| Wait::Fixed(Duration::from_micros(us)));
    let mut configs = vec![
        Config {
            name: "native".into(),
            sweep: None,
            xenio: None,
            phases: phases.clone(),
        },
        Config {
            name: "xenio".into(),
            sweep: None,
            xenio: Some((base.clone(), front_poll)),
            phases: phases.clone(),
        },
    ];
    let knobs: Vec<Knob> = if a.no_sweeps {
        Vec::new()
    } else if a.sweep.is_empty() {
        vec![
            Knob::RingOrder,
            Knob::Reorder,
            Knob::Indirect,
            Knob::Queues,
            Knob::Poll,
        ]
    } else {
        let mut k = a.sweep.clone();
        k.dedup();
        k
    };
    let sweep_phases: Vec<Phase> = if a.sweep_phases.is_empty() {
        vec![
            Phase::BlockOut,
            Phase::BlockIn,
            Phase::Seeks,
            Phase::Fio(0),
            Phase::Fio(3),
        ]
    } else {
        parse_phases(&a.sweep_phases, "--sweep-phases")?
    }
    .into_iter()
    .filter(|p| phases.contains(p))
    .collect();
    let mut sweep_size = None;
    if !knobs.is_empty() && !sweep_phases.is_empty() {
        let want = a.sweep_size_mib.map(|m| m << 20);
        sweep_size = match want {
            Some(w) => Some(sizes.iter().position(|&s| s == w).ok_or_else(|| {
                BenchError::Usage(format!(
                    "--sweep-size-mib {} is not one of --sizes-mib",
                    w >> 20
                ))
            })?),
            None => sizes
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| **s)
                .map(|(i, _)| i),
        };
        for knob in knobs {
            let mut add = |label: String, k: BackendKnobs, poll: Wait| {
                if k == base && poll == front_poll {
                    return; // that is the base configuration itself
                }
                configs.push(Config {
                    name: format!("xenio {}={label}", knob.name()),
                    sweep: Some((knob, label)),
                    xenio: Some((k, poll)),
                    phases: sweep_phases.clone(),
                });
            };
            match knob {
                Knob::RingOrder => {
                    let orders: &[u32] = if q { &[0, 2, 4] } else { &[0, 1, 2, 3, 4] };
                    for &o in orders {
                        add(
                            o.to_string(),
                            BackendKnobs {
                                ring_order: o,
                                ..base.clone()
                            },
                            front_poll,
                        );
                    }
                }
                Knob::Reorder => {
                    let modes: &[ReorderArg] = if q {
                        &[ReorderArg::Off]
                    } else {
                        &[ReorderArg::Off, ReorderArg::Sort, ReorderArg::Merge]
                    };
                    for &m in modes {
                        add(
                            reorder_name(m).to_string(),
                            BackendKnobs {
                                reorder: m,
                                ..base.clone()
                            },
                            front_poll,
                        );
                    }
                }
                Knob::Indirect => {
                    let v: &[u32] = if q { &[256] } else { &[0, 32, 256] };
                    for &n in v {
                        add(
                            n.to_string(),
                            BackendKnobs {
                                indirect: n,
                                ..base.clone()
                            },
                            front_poll,
                        );
                    }
                }
                Knob::Queues => {
                    for n in [1, 2] {
                        add(
                            n.to_string(),
                            BackendKnobs {
                                queues: n,
                                ..base.clone()
                            },
                            front_poll,
                        );
                    }
                }
                Knob::Poll => {
                    // Around the adaptive default: event-driven waiting (what
                    // adapting buys). Around a fixed window (`--poll-us`), the
                    // windows 0 and 50 us, as studies before the adaptive
                    // default had them (so their checkpoints still match).
                    let windows: &[u64] = if a.poll_us.is_none() { &[0] } else { &[0, 50] };
                    for &us in windows {
                        add(
                            format!("{us}us"),
                            BackendKnobs {
                                poll_us: Some(us),
                                ..base.clone()
                            },
                            Wait::Fixed(Duration::from_micros(us)),
                        );
                    }
                }
            }
        }
    }
    Ok(Resolved {
        sizes,
        runs,
        params,
        configs,
        sweep_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::args::test_args as args;

    #[test]
    fn defaults_are_the_papers_and_quick_is_small() {
        let r = resolve(&args(&[])).unwrap();
        assert_eq!(r.sizes, [100 << 20, 500 << 20, 1000 << 20]);
        assert_eq!(r.runs, 50);
        assert_eq!(r.params.seeks, 4000);
        assert_eq!(r.sweep_size, Some(0));
        // native, base, ring orders 1-4, reorder off/sort, indirect 32/256,
        // queues 2, poll 0 (event-driven, against the adaptive base).
        assert_eq!(r.configs.len(), 2 + 4 + 2 + 2 + 1 + 1);
        let q2 = resolve(&args(&["--sweep", "queues"])).unwrap();
        assert_eq!(q2.configs[2].name, "xenio queues=2");
        assert!(r.configs.iter().any(|c| c.name == "xenio queues=2"));
        assert_eq!(r.configs[1].xenio.as_ref().unwrap().0.ring_order, 0);
        let q = resolve(&args(&["--quick"])).unwrap();
        assert_eq!(q.sizes, [16 << 20, 32 << 20]);
        assert_eq!(q.runs, 3);
        assert!(q.configs.len() < r.configs.len());
        let names: Vec<&str> = q.configs.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(&"xenio ring-order=4"), "{names:?}");
    }

    #[test]
    fn phases_and_sweeps_are_selectable_and_checked() {
        let r = resolve(&args(&[
            "--quick",
            "--phases",
            "seeks,block-in",
            "--sweep",
            "ring-order",
            "--sweep-phases",
            "block_in",
        ]))
        .unwrap();
        assert_eq!(r.configs[0].phases, [Phase::BlockIn, Phase::Seeks]);
        assert!(r.configs[2..].iter().all(|c| c.phases == [Phase::BlockIn]));
        assert_eq!(r.configs.len(), 2 + 2);
        assert!(resolve(&args(&["--phases", "bogus"])).is_err());
        assert!(resolve(&args(&["--sizes-mib", "1"])).is_err());
        assert!(resolve(&args(&["--sizes-mib", "8,16", "--sweep-size-mib", "4"])).is_err());
        let n = resolve(&args(&["--no-sweeps"])).unwrap();
        assert_eq!((n.configs.len(), n.sweep_size), (2, None));
    }
}
