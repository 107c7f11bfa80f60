//! The baselines of `xenio-bench blk`: fio (io_uring, O_DIRECT) on a file, and
//! qemu-nbd on a file driven by fio's nbd engine.

use crate::blk::rbd::RbdSpec;
use crate::blk::types::{NbdAio, Sample, Timing, Workload};
use crate::common::error::{BenchError, Result};
use crate::common::proc::{self, Proc, ScratchPath};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What fio does I/O on.
#[derive(Clone, Debug)]
pub enum FioTarget<'a> {
    /// A file, through io_uring; `direct`: O_DIRECT (else the page cache, where a
    /// tmpfs refuses O_DIRECT).
    File {
        /// The file.
        path: &'a Path,
        /// `--direct=1`.
        direct: bool,
    },
    /// An NBD server, through fio's nbd engine (libnbd).
    Nbd {
        /// `nbd+unix:///?socket=...`.
        uri: String,
    },
    /// A Ceph RBD image, through fio's rbd engine (librbd).
    Rbd(&'a RbdSpec),
}

/// One fio measurement.
#[derive(Clone, Debug)]
pub struct FioRun<'a> {
    /// The fio program.
    pub fio: &'a Path,
    /// What to do.
    pub workload: &'a Workload,
    /// On what.
    pub target: FioTarget<'a>,
    /// Bytes of the file (or export) to use.
    pub size: u64,
    /// Ramp and run time.
    pub timing: Timing,
    /// `--randseed`.
    pub seed: u64,
    /// For messages.
    pub label: &'a str,
    /// Where fio writes its JSON (overwritten).
    pub out: &'a Path,
    /// Jobs (`--numjobs`, one connection each on nbd and rbd), sharing the
    /// workload's depth: each is QD/jobs deep (rounded up), reported as one
    /// (`--group_reporting`). 1: one job of depth QD.
    pub jobs: u32,
}

/// fio's command line for `r` (without the program).
pub fn fio_args(r: &FioRun<'_>) -> Vec<String> {
    let w = r.workload;
    let rw = match (w.write, w.random) {
        (false, false) => "read",
        (true, false) => "write",
        (false, true) => "randread",
        (true, true) => "randwrite",
    };
    let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
    let mut a = vec![
        "--name=xenio-bench".to_string(),
        format!("--rw={rw}"),
        format!("--bs={}", w.bs),
        format!("--iodepth={}", w.qd.div_ceil(r.jobs.max(1) as usize)),
        format!("--size={}", r.size),
        "--time_based=1".into(),
        format!("--runtime={}", ms(r.timing.runtime)),
        "--norandommap=1".into(),
        format!("--randseed={}", r.seed),
        // Total latency (submission to completion), as xenio's driver measures it.
        "--lat_percentiles=1".into(),
        "--percentile_list=50:99".into(),
        "--output-format=json".into(),
        format!("--output={}", r.out.display()),
    ];
    if r.jobs > 1 {
        a.push(format!("--numjobs={}", r.jobs));
        a.push("--group_reporting=1".into());
    }
    if !r.timing.warmup.is_zero() {
        a.push(format!("--ramp_time={}", ms(r.timing.warmup)));
    }
    match &r.target {
        FioTarget::File { path, direct } => {
            a.push("--ioengine=io_uring".into());
            a.push(format!("--direct={}", u8::from(*direct)));
            a.push(format!("--filename={}", path.display()));
        }
        FioTarget::Nbd { uri } => {
            a.push("--ioengine=nbd".into());
            a.push(format!("--uri={uri}"));
        }
        FioTarget::Rbd(spec) => {
            a.push("--ioengine=rbd".into());
            a.extend(spec.fio_args());
        }
    }
    a
}

/// Run fio once and read its JSON.
pub fn run(r: &FioRun<'_>) -> Result<Sample> {
    let err_log = r.out.with_extension("stderr");
    let stderr = std::fs::File::create(&err_log)
        .map_err(|e| BenchError::io(format!("creating {}", err_log.display()), e))?;
    let _ = std::fs::remove_file(r.out);
    let mut cmd = proc::command(r.fio);
    if let FioTarget::Rbd(spec) = &r.target {
        cmd.envs(spec.fio_env());
    }
    cmd.args(fio_args(r))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut p = Proc::spawn(&mut cmd, "fio")?;
    let limit = r.timing.warmup + r.timing.runtime + Duration::from_secs(60);
    let Some(status) = p.wait_timeout(limit)? else {
        return Err(BenchError::Tool {
            tool: "fio",
            what: format!(
                "`{}`: still running after {} s; killed",
                r.label,
                limit.as_secs()
            ),
            detail: proc::log_tail(&err_log, 20),
        });
    };
    if !status.success() {
        return Err(BenchError::Tool {
            tool: "fio",
            what: format!("`{}`: {status}", r.label),
            detail: proc::log_tail(&err_log, 20),
        });
    }
    let text = std::fs::read_to_string(r.out)
        .map_err(|e| BenchError::io(format!("reading fio's output {}", r.out.display()), e))?;
    parse(&text, r.workload.write).map_err(|what| BenchError::Tool {
        tool: "fio",
        what: format!("`{}`: {what}", r.label),
        detail: proc::log_tail(&err_log, 20),
    })
}

/// Read one job's numbers out of fio's JSON output (anything before the first
/// `{`, such as a notice, is skipped).
pub fn parse(text: &str, write: bool) -> std::result::Result<Sample, String> {
    let start = text.find('{').ok_or("no JSON in fio's output")?;
    let v: Value =
        serde_json::from_str(&text[start..]).map_err(|e| format!("fio's JSON output: {e}"))?;
    let job = &v["jobs"][0];
    if job.is_null() {
        return Err("fio's JSON output has no job".into());
    }
    if let Some(e) = job["error"].as_i64().filter(|&e| e != 0) {
        return Err(format!("the job failed with error {e}"));
    }
    let d = &job[if write { "write" } else { "read" }];
    let num = |x: &Value, what: &str| {
        x.as_f64()
            .ok_or_else(|| format!("fio's JSON output has no {what}"))
    };
    let pct = |p: &str| num(&d["lat_ns"]["percentile"][p], "lat_ns percentile").map(|ns| ns / 1e3);
    let ops = d["total_ios"].as_u64().unwrap_or(0);
    if ops == 0 {
        return Err("no I/O completed".into());
    }
    // fio's own CPU (percent of its job's runtime, which leaves out ramp_time).
    let cpu_us_per_op = match (
        job["usr_cpu"].as_f64(),
        job["sys_cpu"].as_f64(),
        job["job_runtime"].as_f64(),
    ) {
        (Some(u), Some(s), Some(ms)) if ms > 0.0 => {
            Some((u + s) / 100.0 * ms * 1e3 / ops as f64).filter(|x| x.is_finite())
        }
        _ => None,
    };
    Ok(Sample {
        mbs: num(&d["bw_bytes"], "bw_bytes")? / 1e6,
        iops: num(&d["iops"], "iops")?,
        p50_us: pct("50.000000")?,
        p99_us: pct("99.000000")?,
        ops,
        cpu_us_per_op,
        xenio: None,
    })
}

/// A qemu-nbd serving one file on a Unix socket for one measurement.
pub struct NbdServer {
    proc: Proc,
    socket: ScratchPath,
}

impl NbdServer {
    /// Start `qemu-nbd -f raw --cache=none --aio=AIO -t -k SOCKET FILE` and wait
    /// until it accepts connections.
    pub fn start(
        qemu_nbd: &Path,
        image: &Path,
        scratch: &Path,
        aio: NbdAio,
        label: &str,
    ) -> Result<NbdServer> {
        Self::start_format(qemu_nbd, image, "raw", scratch, aio, 1, label)
    }

    /// [`start`](Self::start) for an image of `format` (`raw`, `qcow2`), for
    /// `conns` connections at once: above 1, `--shared=2*conns+2` (room for
    /// fio's sizing connection and for reconnects), which makes qemu-nbd offer
    /// multi-conn, so that a client may open one connection per queue.
    pub fn start_format(
        qemu_nbd: &Path,
        image: &Path,
        format: &str,
        scratch: &Path,
        aio: NbdAio,
        conns: u32,
        label: &str,
    ) -> Result<NbdServer> {
        let socket = ScratchPath::new(scratch.join("nbd.sock"));
        let log = scratch.join("qemu-nbd.log");
        let _ = std::fs::remove_file(socket.path());
        let stderr = std::fs::File::create(&log)
            .map_err(|e| BenchError::io(format!("creating {}", log.display()), e))?;
        let mut cmd = proc::command(qemu_nbd);
        cmd.args(["-f", format, "--cache=none"])
            .arg(match aio {
                NbdAio::IoUring => "--aio=io_uring",
                NbdAio::Native => "--aio=native",
            })
            // Persistent: fio's nbd engine connects once to size the export and
            // again for the job.
            .arg("--persistent")
            .args((conns > 1).then(|| format!("--shared={}", 2 * conns + 2)))
            .arg("--socket")
            .arg(socket.path())
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut proc = Proc::spawn(&mut cmd, "qemu-nbd")?;
        let start = Instant::now();
        loop {
            if let Some(st) = proc.try_wait()? {
                return Err(BenchError::Tool {
                    tool: "qemu-nbd",
                    what: format!("`{label}`: exited ({st}) before serving"),
                    detail: proc::log_tail(&log, 20),
                });
            }
            if std::os::unix::net::UnixStream::connect(socket.path()).is_ok() {
                return Ok(NbdServer { proc, socket });
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(BenchError::Tool {
                    tool: "qemu-nbd",
                    what: format!("`{label}`: no socket after 10 s; killed"),
                    detail: proc::log_tail(&log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The URI for fio's nbd engine.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.path().display())
    }

    /// Stop it (killed and reaped; the socket is removed).
    pub fn stop(mut self) {
        self.proc.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blk::types::WORKLOADS;

    #[test]
    fn fio_args_for_a_file_and_for_nbd() {
        let t = Timing {
            warmup: Duration::from_millis(500),
            runtime: Duration::from_secs(2),
        };
        let mut r = FioRun {
            fio: Path::new("fio"),
            workload: &WORKLOADS[7],
            target: FioTarget::File {
                path: Path::new("/var/tmp/x.img"),
                direct: true,
            },
            size: 1 << 30,
            timing: t,
            seed: 9,
            label: "t",
            out: Path::new("/tmp/o.json"),
            jobs: 1,
        };
        let a = fio_args(&r).join(" ");
        for want in [
            "--rw=randread",
            "--bs=4096",
            "--iodepth=32",
            "--runtime=2000ms",
            "--ramp_time=500ms",
            "--ioengine=io_uring",
            "--direct=1",
            "--filename=/var/tmp/x.img",
            "--randseed=9",
        ] {
            assert!(a.contains(want), "{want} missing from {a}");
        }
        r.target = FioTarget::Nbd {
            uri: "nbd+unix:///?socket=/s".into(),
        };
        let a = fio_args(&r).join(" ");
        assert!(
            a.contains("--ioengine=nbd --uri=nbd+unix:///?socket=/s"),
            "{a}"
        );
        assert!(!a.contains("--direct"), "{a}");
        assert!(!a.contains("--numjobs"), "{a}");
        // Four connections share QD 32: four jobs 8 deep, reported as one.
        r.jobs = 4;
        let spec = RbdSpec::parse("rbd:rbd/disk:conf=/c/ceph.conf").unwrap();
        r.target = FioTarget::Rbd(&spec);
        let a = fio_args(&r).join(" ");
        for want in [
            "--iodepth=8",
            "--numjobs=4",
            "--group_reporting=1",
            "--ioengine=rbd --pool=rbd --rbdname=disk --clientname=admin",
        ] {
            assert!(a.contains(want), "{want} missing from {a}");
        }
        assert!(!a.contains("--iodepth=32"), "{a}");
    }

    #[test]
    fn parses_fio_json() {
        let text = r#"note: something
{"jobs":[{"error":0,"usr_cpu":10.0,"sys_cpu":40.0,"job_runtime":2000,"read":{"bw_bytes":2000000,"iops":488.3,"total_ios":977,
 "lat_ns":{"percentile":{"50.000000":51200,"99.000000":99840}}},
 "write":{"bw_bytes":0,"iops":0,"total_ios":0}}]}"#;
        let s = parse(text, false).unwrap();
        assert_eq!(s.mbs, 2.0);
        assert_eq!(s.iops, 488.3);
        assert_eq!(s.ops, 977);
        assert!((s.p50_us - 51.2).abs() < 1e-9 && (s.p99_us - 99.84).abs() < 1e-9);
        // 50% of 2000 ms over 977 operations.
        assert!((s.cpu_us_per_op.unwrap() - 1e6 / 977.0).abs() < 1e-6);
        let old = text.replace(r#""job_runtime":2000,"#, "");
        assert_eq!(parse(&old, false).unwrap().cpu_us_per_op, None);
        assert!(parse(text, true).is_err(), "no writes were done");
        assert!(parse(r#"{"jobs":[{"error":5}]}"#, false).is_err());
        assert!(parse("garbage", false).is_err());
    }
}
