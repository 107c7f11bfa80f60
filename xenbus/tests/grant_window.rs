//! [`GrantWindow::release`] on the local platform: grants mapped into a window
//! are unmapped with one `mmap` per run of neighbouring slots, a slot still
//! mapped by a region not given is left alone (its bytes still read), the
//! released slots are reservation again (`---p` in /proc/self/maps) and free
//! to map into, and each region's owner still runs (the pins go: the frontend
//! can revoke its grants).

use xenio_xenbus::local::{LocalDomain, LocalGrantMapper, LocalGrantTable};
use xenio_xenbus::*;

/// Whether `addr` lies in a `PROT_NONE` private mapping of this process.
fn reserved(addr: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            usize::from_str_radix(a, 16).unwrap(),
            usize::from_str_radix(b, 16).unwrap(),
        );
        (a..b).contains(&addr) && perms == "---p"
    })
}

#[test]
fn release_unmaps_runs_of_slots_in_one_call_each() {
    let run = tempfile::tempdir().unwrap();
    let guest = LocalDomain::new(run.path(), DomId(1)).unwrap();
    let dom0 = LocalDomain::new(run.path(), DomId(0)).unwrap();
    let table = LocalGrantTable::new(&guest).unwrap();
    let mapper = LocalGrantMapper::new(&dom0);
    let mut g = table.grant(DomId(0), 8, Access::ReadWrite).unwrap();
    let refs = g.refs().to_vec();
    let base = refs[0].0 as usize;
    assert!(
        refs.iter()
            .enumerate()
            .all(|(i, r)| r.0 as usize == base + i),
        "the test needs consecutive references: {refs:?}"
    );
    let window = GrantWindow::new(base + 64).unwrap();

    // Slot = reference, as blkback lays its persistent grants; each page marked.
    let mut regions: Vec<Region> = refs
        .iter()
        .map(|r| mapper.map_in(&window, r.0 as usize, DomId(1), *r).unwrap())
        .collect();
    for (i, r) in regions.iter().enumerate() {
        assert_eq!(r.as_ptr() as usize, window.addr(base + i).unwrap());
        r.fill(0, 4096, i as u8 + 1).unwrap();
    }
    // Slot base+3 stays mapped; base+0..=2 and base+4..=7 are two runs. A
    // region mapped outside the window is dropped as it is.
    let kept = regions.remove(3);
    regions.push(mapper.map(DomId(1), &refs[3..4]).unwrap());
    assert_eq!(window.release(regions), 2);

    let mut page = vec![0u8; 4096];
    kept.read(0, &mut page).unwrap();
    assert!(page.iter().all(|&b| b == 4), "the kept slot was unmapped");
    for i in (0..8).filter(|&i| i != 3) {
        assert!(
            reserved(window.addr(base + i).unwrap()),
            "slot {i} still mapped"
        );
    }
    assert!(!reserved(window.addr(base + 3).unwrap()));
    // The guest's view: every page still holds its mark (nothing was written
    // through a stale mapping), and only the kept page is still mapped.
    for i in 0..8 {
        g.region().read(i * 4096, &mut page).unwrap();
        assert!(page.iter().all(|&b| b == i as u8 + 1), "page {i}");
    }
    assert!(g.revoke().is_err(), "page 3 is still mapped");

    // The released slots are free again: a grant maps at the same address.
    let again = mapper.map_in(&window, base, DomId(1), refs[0]).unwrap();
    assert_eq!(again.as_ptr() as usize, window.addr(base).unwrap());
    again.read(0, &mut page).unwrap();
    assert!(page.iter().all(|&b| b == 1));
    drop(again);
    drop(kept);
    assert!(reserved(window.addr(base + 3).unwrap()));
    g.revoke().unwrap();

    // Nothing of the window given: nothing to do.
    assert_eq!(window.release(Vec::new()), 0);
}
