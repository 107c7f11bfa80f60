//! XSA-403 on the local platform: a page a frontend grants is zero when the
//! backend first sees it, also when the page held other data before (granted,
//! written, revoked, granted again). Linux's frontends leaked whatever their
//! pages held before they were shared (CVE-2022-26365, -33740, -33741,
//! -33742); the local platform's `grant` zeroes every page it hands out, and
//! this test would fail if it did not.

use xenio_xenbus::local::{LocalDomain, LocalGrantMapper, LocalGrantTable};
use xenio_xenbus::*;

const SECRET: u8 = 0x5a;

/// Grant `pages` to domain 0, fill them with `SECRET`, revoke them; return the
/// pool frames they used.
fn grant_write_revoke(table: &LocalGrantTable, pages: usize) -> Vec<u32> {
    let mut g = table.grant(DomId(0), pages, Access::ReadWrite).unwrap();
    g.region().fill(0, pages * 4096, SECRET).unwrap();
    let frames = g
        .refs()
        .iter()
        .map(|r| table.entry(*r).unwrap().frame)
        .collect();
    g.revoke().unwrap();
    frames
}

#[test]
fn a_page_granted_again_reads_as_zeros_to_the_mapper() {
    let run = tempfile::tempdir().unwrap();
    let guest = LocalDomain::new(run.path(), DomId(1)).unwrap();
    let dom0 = LocalDomain::new(run.path(), DomId(0)).unwrap();
    let table = LocalGrantTable::new(&guest).unwrap();
    let mapper = LocalGrantMapper::new(&dom0);

    for pages in [1usize, 3, 16] {
        let old = grant_write_revoke(&table, pages);
        // Granted again: the pool hands out the freed frames first, so the new
        // grants cover the very memory that held the secret.
        let g = table.grant(DomId(0), pages, Access::ReadOnly).unwrap();
        let mut new: Vec<u32> = g
            .refs()
            .iter()
            .map(|r| table.entry(*r).unwrap().frame)
            .collect();
        let mut old_sorted = old.clone();
        old_sorted.sort_unstable();
        new.sort_unstable();
        assert_eq!(
            new, old_sorted,
            "{pages} page(s): the test needs the frames reused"
        );

        // What the backend sees, by mapping and by grant copy.
        let mapped = mapper.map_readonly(DomId(1), g.refs()).unwrap();
        let mut seen = vec![0xffu8; pages * 4096];
        mapped.read(0, &mut seen).unwrap();
        assert!(
            seen.iter().all(|&b| b == 0),
            "{pages} page(s): the mapper sees {} non-zero bytes of the earlier grant",
            seen.iter().filter(|&&b| b != 0).count()
        );
        drop(mapped);
        for r in g.refs() {
            let mut page = vec![0xffu8; 4096];
            let mut ops = [GrantCopy {
                domid: DomId(1),
                gref: *r,
                offset: 0,
                local: CopyBuf::FromGrant(&mut page),
            }];
            mapper.copy(&mut ops).unwrap().pop().unwrap().unwrap();
            assert!(page.iter().all(|&b| b == 0), "grant copy of {r}");
        }
        // The frontend's own view is zeros too.
        let mut own = vec![0xffu8; pages * 4096];
        g.region().read(0, &mut own).unwrap();
        assert!(own.iter().all(|&b| b == 0));
        drop(g);
    }
}
