//! The Xen platform's behaviour that can be checked without Xen: the probe, the
//! errors for missing devices, and that every ioctl failure names the device and
//! the operation (provoked with `/dev/null`, which answers every ioctl with
//! `ENOTTY`). What needs a real hypervisor runs in the lab (shared/lab).

use std::path::Path;
use xenio_xenbus::xen::{self, EvtchnDevice, GntallocDevice, GntdevDevice, UnmapNotify};
use xenio_xenbus::{
    Access, CopyBuf, DomId, Error, EventChannels, GrantCopy, GrantMapper, GrantRef, GrantTable,
    Port, Region,
};

const DEVICES: [(&str, &str); 3] = [
    ("/dev/xen/evtchn", "xen-evtchn"),
    ("/dev/xen/gntdev", "xen-gntdev"),
    ("/dev/xen/gntalloc", "xen-gntalloc"),
];

fn unavailable(r: Result<(), Error>) -> String {
    match r {
        Err(Error::Unavailable(msg)) => msg,
        other => panic!("expected Error::Unavailable, got {other:?}"),
    }
}

fn is_xen_domain() -> bool {
    std::fs::read_to_string("/sys/hypervisor/type").is_ok_and(|t| t.trim() == "xen")
        || Path::new("/proc/xen").exists()
}

// ---------------------------------------------------------------- the probe

#[test]
fn available_names_exactly_what_is_missing_on_this_machine() {
    let missing: Vec<_> = DEVICES
        .iter()
        .filter(|(d, _)| !Path::new(d).exists())
        .collect();
    if missing.is_empty() && is_xen_domain() {
        xen::available().expect("a Xen domain with every device");
        return;
    }
    let msg = unavailable(xen::available());
    for (dev, module) in DEVICES {
        let named = msg.contains(&format!(
            "{dev} is missing: load the {module} module (modprobe {module}) or run in a Xen domain"
        ));
        assert_eq!(named, !Path::new(dev).exists(), "{dev} in: {msg}");
    }
    assert_eq!(
        msg.contains("not a Xen domain"),
        !is_xen_domain(),
        "hypervisor in: {msg}"
    );
}

#[test]
fn available_under_a_root_lists_each_missing_piece() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();

    // Nothing at all: all four.
    let msg = unavailable(xen::available_under(r));
    assert!(msg.contains("not a Xen domain"), "{msg}");
    assert!(msg.contains("/sys/hypervisor/type and /proc/xen are both missing"));
    for (dev, module) in DEVICES {
        assert!(msg.contains(&format!("{dev} is missing")), "{msg}");
        assert!(msg.contains(&format!("modprobe {module}")), "{msg}");
    }

    // Another hypervisor says so.
    std::fs::create_dir_all(r.join("sys/hypervisor")).unwrap();
    std::fs::write(r.join("sys/hypervisor/type"), "kvm\n").unwrap();
    let msg = unavailable(xen::available_under(r));
    assert!(msg.contains("says \"kvm\""), "{msg}");

    // A Xen domain with only the event channel device.
    std::fs::write(r.join("sys/hypervisor/type"), "xen\n").unwrap();
    std::fs::create_dir_all(r.join("dev/xen")).unwrap();
    std::fs::write(r.join("dev/xen/evtchn"), "").unwrap();
    let msg = unavailable(xen::available_under(r));
    assert!(!msg.contains("Xen domain:"), "{msg}");
    assert!(!msg.contains("/dev/xen/evtchn"), "{msg}");
    assert!(msg.contains("/dev/xen/gntdev is missing"), "{msg}");
    assert!(msg.contains("/dev/xen/gntalloc is missing"), "{msg}");

    // /proc/xen alone also marks a Xen domain; with every device it is available.
    std::fs::remove_file(r.join("sys/hypervisor/type")).unwrap();
    std::fs::create_dir_all(r.join("proc/xen")).unwrap();
    std::fs::write(r.join("dev/xen/gntdev"), "").unwrap();
    std::fs::write(r.join("dev/xen/gntalloc"), "").unwrap();
    xen::available_under(r).expect("everything is there");
}

// ---------------------------------------------------------------- opening

fn open_err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Unavailable(msg)) => msg,
        other => panic!("expected Error::Unavailable, got {other:?}"),
    }
}

#[test]
fn opening_a_missing_device_is_unavailable_with_the_fix() {
    let root = tempfile::tempdir().unwrap();
    let p = |name: &str| root.path().join("dev/xen").join(name);
    let cases = [
        (
            open_err(EvtchnDevice::open_path(p("evtchn"))),
            p("evtchn"),
            "xen-evtchn",
        ),
        (
            open_err(GntdevDevice::open_path(p("gntdev"))),
            p("gntdev"),
            "xen-gntdev",
        ),
        (
            open_err(GntallocDevice::open_path(p("gntalloc"))),
            p("gntalloc"),
            "xen-gntalloc",
        ),
    ];
    for (msg, path, module) in cases {
        assert!(
            msg.contains(&format!(
                "{} is missing: load the {module} module (modprobe {module}) or run in a Xen \
                 domain",
                path.display()
            )),
            "{msg}"
        );
        assert!(!msg.contains("No such file"), "a bare ENOENT: {msg}");
    }
}

#[test]
fn opening_the_standard_devices_here_reports_what_is_missing() {
    fn check<T: std::fmt::Debug>(r: Result<T, Error>, dev: &str, module: &str) {
        if Path::new(dev).exists() {
            // In a Xen domain (the lab) the open itself may work or need root.
            if let Err(e) = r {
                assert!(e.to_string().contains(dev), "{e}");
            }
            return;
        }
        let msg = open_err(r);
        assert!(
            msg.contains(&format!(
                "{dev} is missing: load the {module} module (modprobe {module}) or run in a Xen \
                 domain"
            )),
            "{msg}"
        );
        if !is_xen_domain() {
            assert!(msg.contains("not a Xen domain"), "{msg}");
        }
    }
    check(EvtchnDevice::open(), "/dev/xen/evtchn", "xen-evtchn");
    check(GntdevDevice::open(), "/dev/xen/gntdev", "xen-gntdev");
    check(GntallocDevice::open(), "/dev/xen/gntalloc", "xen-gntalloc");
}

// ---------------------------------------------------------------- ioctl failures

#[test]
fn event_channel_ioctl_failures_name_the_device_and_operation() {
    let dev = EvtchnDevice::open_path("/dev/null").unwrap();
    match dev.alloc_unbound(DomId(3)) {
        Err(Error::EventChannel { port, reason }) => {
            assert_eq!(port, Port(0));
            assert!(
                reason.contains("IOCTL_EVTCHN_BIND_UNBOUND_PORT for domain 3 on /dev/null"),
                "{reason}"
            );
            assert!(reason.contains("ENOTTY"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match dev.bind_interdomain(DomId(3), Port(5)) {
        Err(Error::EventChannel { reason, .. }) => assert!(
            reason.contains("IOCTL_EVTCHN_BIND_INTERDOMAIN to port 5 of domain 3 on /dev/null"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}

fn io_context<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Io { context, .. }) => context,
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn grant_ioctl_failures_name_the_device_and_operation() {
    let alloc = GntallocDevice::open_path("/dev/null").unwrap();
    let ctx = io_context(alloc.grant(DomId(1), 2, Access::ReadWrite));
    assert!(
        ctx.contains("IOCTL_GNTALLOC_ALLOC_GREF of 2 pages for domain 1 on /dev/null"),
        "{ctx}"
    );

    let dev = GntdevDevice::open_path("/dev/null").unwrap();
    let ctx = io_context(dev.map(DomId(1), &[GrantRef(8), GrantRef(9)]));
    assert!(ctx.contains("IOCTL_GNTDEV_MAP_GRANT_REF"), "{ctx}");
    assert!(
        ctx.contains("mapping 2 grants of domain 1 read-write"),
        "{ctx}"
    );
    assert!(ctx.contains("/dev/null"), "{ctx}");
    let ctx = io_context(dev.map_readonly(DomId(1), &[GrantRef(8)]));
    assert!(ctx.contains("read-only"), "{ctx}");

    let mut buf = [0u8; 64];
    let mut ops = [GrantCopy {
        domid: DomId(1),
        gref: GrantRef(8),
        offset: 0,
        local: CopyBuf::FromGrant(&mut buf),
    }];
    let ctx = io_context(dev.copy(&mut ops));
    assert!(
        ctx.contains("IOCTL_GNTDEV_GRANT_COPY of 1 segments on /dev/null"),
        "{ctx}"
    );

    // Mainline Linux never implemented SET_MAX_GRANTS: ENOTTY counts as done, as
    // in libxengnttab.
    dev.set_max_grants(128).unwrap();
}

#[test]
fn empty_grants_are_refused_before_the_kernel_is_asked() {
    let dev = GntdevDevice::open_path("/dev/null").unwrap();
    assert!(matches!(dev.map(DomId(1), &[]), Err(Error::Limit(_))));
    assert!(matches!(
        dev.map_readonly(DomId(1), &[]),
        Err(Error::Limit(_))
    ));
    let alloc = GntallocDevice::open_path("/dev/null").unwrap();
    assert!(matches!(
        alloc.grant(DomId(1), 0, Access::ReadOnly),
        Err(Error::Limit(_))
    ));
}

#[test]
fn copies_that_leave_the_page_are_refused_per_op_without_an_ioctl() {
    // /dev/null would fail any ioctl, so an Ok outer result proves none was made.
    let dev = GntdevDevice::open_path("/dev/null").unwrap();
    let mut a = [0u8; 200];
    let b = [0u8; 4097];
    let mut z = [0u8; 0];
    let mut ops = [
        GrantCopy {
            domid: DomId(2),
            gref: GrantRef(10),
            offset: 4000,
            local: CopyBuf::FromGrant(&mut a),
        },
        GrantCopy {
            domid: DomId(2),
            gref: GrantRef(11),
            offset: 0,
            local: CopyBuf::ToGrant(&b),
        },
        GrantCopy {
            domid: DomId(2),
            gref: GrantRef(12),
            offset: 100,
            local: CopyBuf::FromGrant(&mut z),
        },
    ];
    let res = dev.copy(&mut ops).expect("no ioctl for these");
    assert_eq!(res.len(), 3);
    for (r, gref) in res[..2].iter().zip([10, 11]) {
        match r {
            Err(Error::Grant {
                domid,
                gref: g,
                reason,
            }) => {
                assert_eq!((*domid, *g), (DomId(2), GrantRef(gref)));
                assert!(reason.contains("GNTST_bad_copy_arg"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(res[2].is_ok(), "a zero-length copy succeeds");
    // No ops: nothing to do.
    assert!(dev.copy(&mut []).unwrap().is_empty());
}

#[test]
fn unmap_notify_needs_a_region_mapped_by_this_descriptor() {
    // A region that gntdev did not map (plain heap memory).
    let mut words = vec![0u64; 512].into_boxed_slice();
    let ptr = std::ptr::NonNull::new(words.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: the boxed slice (4096 bytes, 8-byte aligned) moves into the owner,
    // which keeps it alive as long as the region; nothing else touches it.
    let region = unsafe { Region::from_raw(ptr, 4096, Box::new(words)) };
    let dev = GntdevDevice::open_path("/dev/null").unwrap();
    let notify = UnmapNotify {
        clear_byte: Some(0),
        send_event: Some(Port(7)),
    };
    match dev.set_unmap_notify(&region, notify) {
        Err(Error::BadValue { what, value }) => {
            assert!(what.contains("IOCTL_GNTDEV_SET_UNMAP_NOTIFY"), "{what}");
            assert!(
                value.contains("was not mapped through this descriptor of /dev/null"),
                "{value}"
            );
        }
        other => panic!("{other:?}"),
    }
}
