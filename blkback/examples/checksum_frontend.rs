//! A frontend program for `checksum_backend` (or any blkif backend): it waits
//! for the device, writes and verifies `--write-verify N` blocks (from block
//! 8 on), then reads the `--read` blocks all at once and says, block by block,
//! what came back. Exit status 1 when any of it failed.
//!
//!     cargo run -p xenio-blkback --example checksum_frontend -- --run-dir /dev/shm/xenio --read 0,2,3
//!
//! Options: `--platform local|xen|auto`, `--run-dir DIR`, `--domid N` (this
//! domain on the local platform: 1), `--vdev NAME` (xvda), `--write-verify N`
//! (16), `--read LIST` (0,1,2,3).
use std::process::ExitCode;
use std::sync::Arc;
use xenio_sdk::blkback::config::vdev_to_devid;
use xenio_sdk::blkfront::{BlkFront, Op, Options};
use xenio_sdk::platform::{
    DomId, LocalPlatform, Platform, PlatformChoice, PlatformKind, XenPlatform, default_run_dir,
    resolve,
};

const BLOCK: u64 = 4096;

struct Args {
    platform: PlatformChoice,
    run_dir: std::path::PathBuf,
    domid: u16,
    vdev: String,
    writes: u64,
    reads: Vec<u64>,
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut a = Args {
        platform: PlatformChoice::Auto,
        run_dir: default_run_dir(),
        domid: 1,
        vdev: "xvda".into(),
        writes: 16,
        reads: vec![0, 1, 2, 3],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--platform" => a.platform = value()?.parse()?,
            "--run-dir" => a.run_dir = value()?.into(),
            "--domid" => a.domid = value()?.parse()?,
            "--vdev" => a.vdev = value()?,
            "--write-verify" => a.writes = value()?.parse()?,
            "--read" => {
                let list = value()?;
                a.reads = list.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown argument {arg} (see the file's header)").into()),
        }
    }
    match resolve(a.platform)? {
        PlatformKind::Local => run(LocalPlatform::connect(&a.run_dir, DomId(a.domid))?, &a),
        PlatformKind::Xen => run(XenPlatform::open()?, &a),
    }
}

fn run<P: Platform>(platform: P, a: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let devid = vdev_to_devid(&a.vdev).ok_or(format!("{}: not a virtual disk name", a.vdev))?;
    // Waits (Options::device_timeout) for the device and its backend.
    let mut disk = BlkFront::connect(
        Arc::new(platform),
        &format!("device/vbd/{devid}"),
        Options::default(),
    )?;
    println!("connected: {} MiB", disk.size() >> 20);
    let mut ok = true;
    for b in 8..8 + a.writes {
        let data: Vec<u8> = (0..BLOCK).map(|i| (i as u8) ^ (b as u8)).collect();
        disk.write_at(b * BLOCK, &data)?;
        let mut back = vec![0; BLOCK as usize];
        disk.read_at(b * BLOCK, &mut back)?;
        ok &= back == data;
    }
    println!(
        "write-verify of {} blocks: {}",
        a.writes,
        if ok { "ok" } else { "MISMATCH" }
    );
    // Every read in flight at once: the backend may merge them.
    let mut tokens = Vec::new();
    for &b in &a.reads {
        let buf = disk.alloc(BLOCK as usize)?;
        tokens.push((
            disk.submit(Op::Read {
                offset: b * BLOCK,
                buf,
            })?,
            b,
        ));
    }
    let mut done = Vec::new();
    while done.len() < tokens.len() {
        disk.poll(&mut done, Some(std::time::Duration::from_secs(10)))?;
    }
    for (token, block) in tokens {
        let d = done
            .iter_mut()
            .find(|d| d.token == token)
            .ok_or("a read was lost")?;
        match &d.result {
            Ok(()) => println!("block {block}: ok"),
            Err(e) => println!("block {block}: failed: {e}"),
        }
        ok &= d.result.is_ok();
        if let Some(buf) = d.buf.take() {
            disk.free(buf);
        }
    }
    disk.close()?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
