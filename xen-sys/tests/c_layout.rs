//! Differential test: every size, alignment, field offset and constant that
//! xen-sys mirrors is compared with what a C compiler reports through the real
//! Xen and Linux headers (`tests/c/layout.c`). Nothing here is copied by hand from
//! the headers: the expected numbers come from the compiler at test time.

use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use xenio_xen_sys::blkif::*;
use xenio_xen_sys::blkif_x86_32::*;
use xenio_xen_sys::grant_table::*;
use xenio_xen_sys::ioctl::evtchn::*;
use xenio_xen_sys::ioctl::gntalloc::*;
use xenio_xen_sys::ioctl::gntdev::*;
use xenio_xen_sys::ioctl::*;
use xenio_xen_sys::netif::*;
use xenio_xen_sys::protocols::*;
use xenio_xen_sys::ring::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xen_sys::xs_wire::*;
use xenio_xen_sys::{DomId, ring};

/// Compile `tests/c/<name>.c` against the system headers and run it.
fn c_output(name: &str) -> String {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} ({e}); install gcc"));
    assert!(
        out.status.success(),
        "compiling {} failed (are libxen-dev and linux-libc-dev installed?):\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&bin).output().expect("run the layout program");
    assert!(run.status.success());
    String::from_utf8(run.stdout).expect("utf-8 output")
}

#[derive(Default)]
struct Rows(BTreeMap<String, String>);

impl Rows {
    fn put(&mut self, key: String, value: impl ToString) {
        let prev = self.0.insert(key.clone(), value.to_string());
        assert!(prev.is_none(), "Rust table lists {key} twice");
    }
}

macro_rules! ty {
    ($rows:ident, $c:literal, $t:ty) => {
        $rows.put(format!("size {}", $c), size_of::<$t>());
        $rows.put(format!("align {}", $c), align_of::<$t>());
    };
}
macro_rules! fields {
    ($rows:ident, $c:literal, $t:ty { $($cf:literal => $($rf:ident).+),* $(,)? }) => {
        $( $rows.put(format!("offset {}.{}", $c, $cf), offset_of!($t, $($rf).+)); )*
    };
}
macro_rules! consts {
    ($rows:ident, $($name:literal => $v:expr),* $(,)?) => {
        $( $rows.put(format!("const {}", $name), ($v) as i128); )*
    };
}

fn rust_rows() -> Rows {
    let mut r = Rows::default();

    // io/ring.h: blkif_sring is the header plus one entry (`ring[1]`).
    let blk_entry = entry_size::<BlkifRequest, BlkifResponse>();
    r.put(
        "size struct blkif_sring".into(),
        SRING_HEADER_SIZE + blk_entry,
    );
    r.put(
        "align struct blkif_sring".into(),
        align_of::<SringHeader>().max(align_of::<BlkifRequest>()),
    );
    fields!(r, "struct blkif_sring", SringHeader {
        "req_prod" => req_prod, "req_event" => req_event, "rsp_prod" => rsp_prod,
        "rsp_event" => rsp_event, "pvt" => pvt, "__pad" => pad,
    });
    r.put("offset struct blkif_sring.ring".into(), SRING_HEADER_SIZE);
    r.put("size union blkif_sring_entry".into(), blk_entry);
    r.put(
        "align union blkif_sring_entry".into(),
        align_of::<BlkifRequest>().max(align_of::<BlkifResponse>()),
    );
    r.put(
        "size union netif_tx_sring_entry".into(),
        entry_size::<NetifTxRequest, NetifTxResponse>(),
    );
    r.put(
        "align union netif_tx_sring_entry".into(),
        align_of::<NetifTxRequest>(),
    );
    r.put(
        "size union netif_rx_sring_entry".into(),
        entry_size::<NetifRxRequest, NetifRxResponse>(),
    );
    r.put(
        "align union netif_rx_sring_entry".into(),
        align_of::<NetifRxRequest>(),
    );

    // io/blkif.h
    ty!(r, "struct blkif_request_segment", BlkifRequestSegment);
    fields!(r, "struct blkif_request_segment", BlkifRequestSegment {
        "gref" => gref, "first_sect" => first_sect, "last_sect" => last_sect,
    });
    ty!(r, "struct blkif_request", BlkifRequest);
    fields!(r, "struct blkif_request", BlkifRequest {
        "operation" => operation, "nr_segments" => nr_segments, "handle" => handle, "id" => id,
        "sector_number" => sector_number, "seg" => seg,
    });
    ty!(r, "struct blkif_request_discard", BlkifRequestDiscard);
    fields!(r, "struct blkif_request_discard", BlkifRequestDiscard {
        "operation" => operation, "flag" => flag, "handle" => handle, "id" => id,
        "sector_number" => sector_number, "nr_sectors" => nr_sectors,
    });
    ty!(r, "struct blkif_request_indirect", BlkifRequestIndirect);
    fields!(r, "struct blkif_request_indirect", BlkifRequestIndirect {
        "operation" => operation, "indirect_op" => indirect_op, "nr_segments" => nr_segments,
        "id" => id, "sector_number" => sector_number, "handle" => handle,
        "indirect_grefs" => indirect_grefs,
    });
    ty!(r, "struct blkif_response", BlkifResponse);
    fields!(r, "struct blkif_response", BlkifResponse {
        "id" => id, "operation" => operation, "status" => status,
    });
    consts!(r,
        "BLKIF_OP_READ" => BLKIF_OP_READ, "BLKIF_OP_WRITE" => BLKIF_OP_WRITE,
        "BLKIF_OP_WRITE_BARRIER" => BLKIF_OP_WRITE_BARRIER,
        "BLKIF_OP_FLUSH_DISKCACHE" => BLKIF_OP_FLUSH_DISKCACHE,
        "BLKIF_OP_RESERVED_1" => BLKIF_OP_RESERVED_1, "BLKIF_OP_DISCARD" => BLKIF_OP_DISCARD,
        "BLKIF_OP_INDIRECT" => BLKIF_OP_INDIRECT,
        "BLKIF_MAX_SEGMENTS_PER_REQUEST" => BLKIF_MAX_SEGMENTS_PER_REQUEST,
        "BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST" => BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
        "BLKIF_DISCARD_SECURE" => BLKIF_DISCARD_SECURE,
        "BLKIF_RSP_EOPNOTSUPP" => BLKIF_RSP_EOPNOTSUPP, "BLKIF_RSP_ERROR" => BLKIF_RSP_ERROR,
        "BLKIF_RSP_OKAY" => BLKIF_RSP_OKAY,
        "VDISK_CDROM" => VDISK_CDROM, "VDISK_REMOVABLE" => VDISK_REMOVABLE,
        "VDISK_READONLY" => VDISK_READONLY,
    );

    // io/netif.h
    ty!(r, "struct netif_tx_request", NetifTxRequest);
    fields!(r, "struct netif_tx_request", NetifTxRequest {
        "gref" => gref, "offset" => offset, "flags" => flags, "id" => id, "size" => size,
    });
    ty!(r, "struct netif_tx_response", NetifTxResponse);
    fields!(r, "struct netif_tx_response", NetifTxResponse { "id" => id, "status" => status });
    ty!(r, "struct netif_rx_request", NetifRxRequest);
    fields!(r, "struct netif_rx_request", NetifRxRequest { "id" => id, "pad" => pad, "gref" => gref });
    ty!(r, "struct netif_rx_response", NetifRxResponse);
    fields!(r, "struct netif_rx_response", NetifRxResponse {
        "id" => id, "offset" => offset, "flags" => flags, "status" => status,
    });
    ty!(r, "struct netif_extra_info", NetifExtraInfo);
    fields!(r, "struct netif_extra_info", NetifExtraInfo {
        "type" => type_, "flags" => flags, "u" => u,
        "u.gso.size" => u.gso.size, "u.gso.type" => u.gso.type_, "u.gso.pad" => u.gso.pad,
        "u.gso.features" => u.gso.features, "u.mcast.addr" => u.mcast.addr,
        "u.hash.type" => u.hash.type_, "u.hash.algorithm" => u.hash.algorithm,
        "u.hash.value" => u.hash.value, "u.pad" => u.pad,
    });
    consts!(r,
        "XEN_NETIF_NR_SLOTS_MIN" => XEN_NETIF_NR_SLOTS_MIN,
        "XEN_NETIF_MAX_TX_SIZE" => XEN_NETIF_MAX_TX_SIZE,
        "NETTXF_csum_blank" => NETTXF_CSUM_BLANK, "NETTXF_data_validated" => NETTXF_DATA_VALIDATED,
        "NETTXF_more_data" => NETTXF_MORE_DATA, "NETTXF_extra_info" => NETTXF_EXTRA_INFO,
        "NETRXF_data_validated" => NETRXF_DATA_VALIDATED, "NETRXF_csum_blank" => NETRXF_CSUM_BLANK,
        "NETRXF_more_data" => NETRXF_MORE_DATA, "NETRXF_extra_info" => NETRXF_EXTRA_INFO,
        "NETRXF_gso_prefix" => NETRXF_GSO_PREFIX,
        "XEN_NETIF_EXTRA_TYPE_NONE" => XEN_NETIF_EXTRA_TYPE_NONE,
        "XEN_NETIF_EXTRA_TYPE_GSO" => XEN_NETIF_EXTRA_TYPE_GSO,
        "XEN_NETIF_EXTRA_TYPE_MCAST_ADD" => XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
        "XEN_NETIF_EXTRA_TYPE_MCAST_DEL" => XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
        "XEN_NETIF_EXTRA_TYPE_HASH" => XEN_NETIF_EXTRA_TYPE_HASH,
        "XEN_NETIF_EXTRA_TYPE_MAX" => XEN_NETIF_EXTRA_TYPE_MAX,
        "XEN_NETIF_EXTRA_FLAG_MORE" => XEN_NETIF_EXTRA_FLAG_MORE,
        "XEN_NETIF_GSO_TYPE_NONE" => XEN_NETIF_GSO_TYPE_NONE,
        "XEN_NETIF_GSO_TYPE_TCPV4" => XEN_NETIF_GSO_TYPE_TCPV4,
        "XEN_NETIF_GSO_TYPE_TCPV6" => XEN_NETIF_GSO_TYPE_TCPV6,
        "NETIF_RSP_DROPPED" => NETIF_RSP_DROPPED, "NETIF_RSP_ERROR" => NETIF_RSP_ERROR,
        "NETIF_RSP_OKAY" => NETIF_RSP_OKAY, "NETIF_RSP_NULL" => NETIF_RSP_NULL,
    );

    // io/xenbus.h
    consts!(r,
        "XenbusStateUnknown" => XenbusState::Unknown, "XenbusStateInitialising" => XenbusState::Initialising,
        "XenbusStateInitWait" => XenbusState::InitWait, "XenbusStateInitialised" => XenbusState::Initialised,
        "XenbusStateConnected" => XenbusState::Connected, "XenbusStateClosing" => XenbusState::Closing,
        "XenbusStateClosed" => XenbusState::Closed, "XenbusStateReconfiguring" => XenbusState::Reconfiguring,
        "XenbusStateReconfigured" => XenbusState::Reconfigured,
    );

    // io/xs_wire.h
    ty!(r, "struct xsd_sockmsg", XsdSockmsg);
    fields!(r, "struct xsd_sockmsg", XsdSockmsg {
        "type" => type_, "req_id" => req_id, "tx_id" => tx_id, "len" => len,
    });
    use XsdSockmsgType as X;
    consts!(r,
        "XS_CONTROL" => X::Control, "XS_DIRECTORY" => X::Directory, "XS_READ" => X::Read,
        "XS_GET_PERMS" => X::GetPerms, "XS_WATCH" => X::Watch, "XS_UNWATCH" => X::Unwatch,
        "XS_TRANSACTION_START" => X::TransactionStart, "XS_TRANSACTION_END" => X::TransactionEnd,
        "XS_INTRODUCE" => X::Introduce, "XS_RELEASE" => X::Release,
        "XS_GET_DOMAIN_PATH" => X::GetDomainPath, "XS_WRITE" => X::Write, "XS_MKDIR" => X::Mkdir,
        "XS_RM" => X::Rm, "XS_SET_PERMS" => X::SetPerms, "XS_WATCH_EVENT" => X::WatchEvent,
        "XS_ERROR" => X::Error, "XS_IS_DOMAIN_INTRODUCED" => X::IsDomainIntroduced,
        "XS_RESUME" => X::Resume, "XS_SET_TARGET" => X::SetTarget,
        "XS_RESET_WATCHES" => X::ResetWatches, "XS_DIRECTORY_PART" => X::DirectoryPart,
        "XS_TYPE_COUNT" => XS_TYPE_COUNT, "XS_INVALID" => XS_INVALID,
        "XS_WATCH_PATH" => XS_WATCH_PATH, "XS_WATCH_TOKEN" => XS_WATCH_TOKEN,
        "XENSTORE_RING_SIZE" => XENSTORE_RING_SIZE, "XENSTORE_PAYLOAD_MAX" => XENSTORE_PAYLOAD_MAX,
        "XENSTORE_ABS_PATH_MAX" => XENSTORE_ABS_PATH_MAX,
        "XENSTORE_REL_PATH_MAX" => XENSTORE_REL_PATH_MAX,
        "XENSTORE_SERVER_FEATURE_RECONNECTION" => XENSTORE_SERVER_FEATURE_RECONNECTION,
        "XENSTORE_SERVER_FEATURE_ERROR" => XENSTORE_SERVER_FEATURE_ERROR,
        "XENSTORE_CONNECTED" => XENSTORE_CONNECTED, "XENSTORE_RECONNECT" => XENSTORE_RECONNECT,
        "XENSTORE_ERROR_NONE" => XENSTORE_ERROR_NONE, "XENSTORE_ERROR_COMM" => XENSTORE_ERROR_COMM,
        "XENSTORE_ERROR_RINGIDX" => XENSTORE_ERROR_RINGIDX,
        "XENSTORE_ERROR_PROTO" => XENSTORE_ERROR_PROTO,
    );
    for (i, (errno, name)) in XSD_ERRORS.iter().enumerate() {
        r.put(format!("xsderror {i}"), format!("{name} {errno}"));
    }
    r.put(
        "str XEN_IO_PROTO_ABI_X86_32".into(),
        XEN_IO_PROTO_ABI_X86_32,
    );
    r.put(
        "str XEN_IO_PROTO_ABI_X86_64".into(),
        XEN_IO_PROTO_ABI_X86_64,
    );
    r.put("str XEN_IO_PROTO_ABI_ARM".into(), XEN_IO_PROTO_ABI_ARM);
    r.put("str XS_WRITE_NONE".into(), XS_WRITE_NONE);
    r.put("str XS_WRITE_CREATE".into(), XS_WRITE_CREATE);
    r.put("str XS_WRITE_CREATE_EXCL".into(), XS_WRITE_CREATE_EXCL);
    ty!(
        r,
        "struct xenstore_domain_interface",
        XenstoreDomainInterface
    );
    fields!(r, "struct xenstore_domain_interface", XenstoreDomainInterface {
        "req" => req, "rsp" => rsp, "req_cons" => req_cons, "req_prod" => req_prod,
        "rsp_cons" => rsp_cons, "rsp_prod" => rsp_prod, "server_features" => server_features,
        "connection" => connection, "error" => error,
    });

    // grant_table.h
    ty!(r, "struct grant_entry_v1", GrantEntryV1);
    fields!(r, "struct grant_entry_v1", GrantEntryV1 { "flags" => flags, "domid" => domid, "frame" => frame });
    consts!(r,
        "GTF_invalid" => GTF_INVALID, "GTF_permit_access" => GTF_PERMIT_ACCESS,
        "GTF_accept_transfer" => GTF_ACCEPT_TRANSFER, "GTF_transitive" => GTF_TRANSITIVE,
        "GTF_type_mask" => GTF_TYPE_MASK, "GTF_readonly" => GTF_READONLY,
        "GTF_reading" => GTF_READING, "GTF_writing" => GTF_WRITING, "GTF_PWT" => GTF_PWT,
        "GTF_PCD" => GTF_PCD, "GTF_PAT" => GTF_PAT, "GTF_sub_page" => GTF_SUB_PAGE,
        "GTF_transfer_committed" => GTF_TRANSFER_COMMITTED,
        "GTF_transfer_completed" => GTF_TRANSFER_COMPLETED,
        "GNTCOPY_source_gref" => GNTCOPY_SOURCE_GREF, "GNTCOPY_dest_gref" => GNTCOPY_DEST_GREF,
        "GNTST_okay" => GNTST_OKAY, "GNTST_general_error" => GNTST_GENERAL_ERROR,
        "GNTST_bad_domain" => GNTST_BAD_DOMAIN, "GNTST_bad_gntref" => GNTST_BAD_GNTREF,
        "GNTST_bad_handle" => GNTST_BAD_HANDLE, "GNTST_bad_virt_addr" => GNTST_BAD_VIRT_ADDR,
        "GNTST_bad_dev_addr" => GNTST_BAD_DEV_ADDR, "GNTST_no_device_space" => GNTST_NO_DEVICE_SPACE,
        "GNTST_permission_denied" => GNTST_PERMISSION_DENIED, "GNTST_bad_page" => GNTST_BAD_PAGE,
        "GNTST_bad_copy_arg" => GNTST_BAD_COPY_ARG, "GNTST_address_too_big" => GNTST_ADDRESS_TOO_BIG,
        "GNTST_eagain" => GNTST_EAGAIN, "GNTST_no_space" => GNTST_NO_SPACE,
        "DOMID_FIRST_RESERVED" => DomId::FIRST_RESERVED.0, "DOMID_SELF" => DomId::SELF.0,
        "DOMID_INVALID" => DomId::INVALID.0,
    );

    // Linux xen/evtchn.h
    ty!(r, "struct ioctl_evtchn_bind_virq", IoctlEvtchnBindVirq);
    fields!(r, "struct ioctl_evtchn_bind_virq", IoctlEvtchnBindVirq { "virq" => virq });
    ty!(
        r,
        "struct ioctl_evtchn_bind_interdomain",
        IoctlEvtchnBindInterdomain
    );
    fields!(r, "struct ioctl_evtchn_bind_interdomain", IoctlEvtchnBindInterdomain {
        "remote_domain" => remote_domain, "remote_port" => remote_port,
    });
    ty!(
        r,
        "struct ioctl_evtchn_bind_unbound_port",
        IoctlEvtchnBindUnboundPort
    );
    fields!(r, "struct ioctl_evtchn_bind_unbound_port", IoctlEvtchnBindUnboundPort {
        "remote_domain" => remote_domain,
    });
    ty!(r, "struct ioctl_evtchn_unbind", IoctlEvtchnUnbind);
    fields!(r, "struct ioctl_evtchn_unbind", IoctlEvtchnUnbind { "port" => port });
    ty!(r, "struct ioctl_evtchn_notify", IoctlEvtchnNotify);
    fields!(r, "struct ioctl_evtchn_notify", IoctlEvtchnNotify { "port" => port });
    ty!(
        r,
        "struct ioctl_evtchn_restrict_domid",
        IoctlEvtchnRestrictDomid
    );
    fields!(r, "struct ioctl_evtchn_restrict_domid", IoctlEvtchnRestrictDomid { "domid" => domid });
    consts!(r,
        "IOCTL_EVTCHN_BIND_VIRQ" => IOCTL_EVTCHN_BIND_VIRQ,
        "IOCTL_EVTCHN_BIND_INTERDOMAIN" => IOCTL_EVTCHN_BIND_INTERDOMAIN,
        "IOCTL_EVTCHN_BIND_UNBOUND_PORT" => IOCTL_EVTCHN_BIND_UNBOUND_PORT,
        "IOCTL_EVTCHN_UNBIND" => IOCTL_EVTCHN_UNBIND, "IOCTL_EVTCHN_NOTIFY" => IOCTL_EVTCHN_NOTIFY,
        "IOCTL_EVTCHN_RESET" => IOCTL_EVTCHN_RESET,
        "IOCTL_EVTCHN_RESTRICT_DOMID" => IOCTL_EVTCHN_RESTRICT_DOMID,
    );

    // Linux xen/gntdev.h
    ty!(r, "struct ioctl_gntdev_grant_ref", IoctlGntdevGrantRef);
    fields!(r, "struct ioctl_gntdev_grant_ref", IoctlGntdevGrantRef { "domid" => domid, "ref" => ref_ });
    ty!(
        r,
        "struct ioctl_gntdev_map_grant_ref",
        IoctlGntdevMapGrantRef
    );
    fields!(r, "struct ioctl_gntdev_map_grant_ref", IoctlGntdevMapGrantRef {
        "count" => count, "pad" => pad, "index" => index, "refs" => refs,
    });
    ty!(
        r,
        "struct ioctl_gntdev_unmap_grant_ref",
        IoctlGntdevUnmapGrantRef
    );
    fields!(r, "struct ioctl_gntdev_unmap_grant_ref", IoctlGntdevUnmapGrantRef {
        "index" => index, "count" => count, "pad" => pad,
    });
    ty!(
        r,
        "struct ioctl_gntdev_get_offset_for_vaddr",
        IoctlGntdevGetOffsetForVaddr
    );
    fields!(r, "struct ioctl_gntdev_get_offset_for_vaddr", IoctlGntdevGetOffsetForVaddr {
        "vaddr" => vaddr, "offset" => offset, "count" => count, "pad" => pad,
    });
    ty!(
        r,
        "struct ioctl_gntdev_set_max_grants",
        IoctlGntdevSetMaxGrants
    );
    fields!(r, "struct ioctl_gntdev_set_max_grants", IoctlGntdevSetMaxGrants { "count" => count });
    ty!(
        r,
        "struct ioctl_gntdev_unmap_notify",
        IoctlGntdevUnmapNotify
    );
    fields!(r, "struct ioctl_gntdev_unmap_notify", IoctlGntdevUnmapNotify {
        "index" => index, "action" => action, "event_channel_port" => event_channel_port,
    });
    ty!(
        r,
        "struct gntdev_grant_copy_segment",
        GntdevGrantCopySegment
    );
    fields!(r, "struct gntdev_grant_copy_segment", GntdevGrantCopySegment {
        "source" => source, "dest" => dest, "source.virt" => source.virt,
        "source.foreign.ref" => source.foreign.ref_, "source.foreign.offset" => source.foreign.offset,
        "source.foreign.domid" => source.foreign.domid,
        "len" => len, "flags" => flags, "status" => status,
    });
    ty!(r, "struct ioctl_gntdev_grant_copy", IoctlGntdevGrantCopy);
    fields!(r, "struct ioctl_gntdev_grant_copy", IoctlGntdevGrantCopy {
        "count" => count, "segments" => segments,
    });
    consts!(r,
        "IOCTL_GNTDEV_MAP_GRANT_REF" => IOCTL_GNTDEV_MAP_GRANT_REF,
        "IOCTL_GNTDEV_UNMAP_GRANT_REF" => IOCTL_GNTDEV_UNMAP_GRANT_REF,
        "IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR" => IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR,
        "IOCTL_GNTDEV_SET_MAX_GRANTS" => IOCTL_GNTDEV_SET_MAX_GRANTS,
        "IOCTL_GNTDEV_SET_UNMAP_NOTIFY" => IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
        "IOCTL_GNTDEV_GRANT_COPY" => IOCTL_GNTDEV_GRANT_COPY,
        "UNMAP_NOTIFY_CLEAR_BYTE" => UNMAP_NOTIFY_CLEAR_BYTE,
        "UNMAP_NOTIFY_SEND_EVENT" => UNMAP_NOTIFY_SEND_EVENT,
    );

    // Linux xen/gntalloc.h
    ty!(
        r,
        "struct ioctl_gntalloc_alloc_gref",
        IoctlGntallocAllocGref
    );
    fields!(r, "struct ioctl_gntalloc_alloc_gref", IoctlGntallocAllocGref {
        "domid" => domid, "flags" => flags, "count" => count, "index" => index,
        "gref_ids" => gref_ids,
    });
    ty!(
        r,
        "struct ioctl_gntalloc_dealloc_gref",
        IoctlGntallocDeallocGref
    );
    fields!(r, "struct ioctl_gntalloc_dealloc_gref", IoctlGntallocDeallocGref {
        "index" => index, "count" => count,
    });
    ty!(
        r,
        "struct ioctl_gntalloc_unmap_notify",
        IoctlGntallocUnmapNotify
    );
    fields!(r, "struct ioctl_gntalloc_unmap_notify", IoctlGntallocUnmapNotify {
        "index" => index, "action" => action, "event_channel_port" => event_channel_port,
    });
    consts!(r,
        "IOCTL_GNTALLOC_ALLOC_GREF" => IOCTL_GNTALLOC_ALLOC_GREF,
        "IOCTL_GNTALLOC_DEALLOC_GREF" => IOCTL_GNTALLOC_DEALLOC_GREF,
        "IOCTL_GNTALLOC_SET_UNMAP_NOTIFY" => IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
        "GNTALLOC_FLAG_WRITABLE" => GNTALLOC_FLAG_WRITABLE,
    );
    let _ = ring::XEN_PAGE_SIZE;
    r
}

fn c_rows() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in c_output("layout").lines() {
        // "<kind> <name> <value...>": the key is the first two words.
        let mut parts = line.splitn(3, ' ');
        let (kind, name, value) = (parts.next(), parts.next(), parts.next());
        let (Some(kind), Some(name), Some(value)) = (kind, name, value) else {
            panic!("malformed line from the C program: {line:?}");
        };
        let key = format!("{kind} {name}");
        // "struct x" names have a space: rejoin "size struct" + "x N".
        let (key, value) = if name == "struct" || name == "union" {
            let (n, v) = value
                .split_once(' ')
                .expect("size/align/offset lines have a value");
            (format!("{key} {n}"), v.to_string())
        } else {
            (key, value.to_string())
        };
        assert!(
            m.insert(key.clone(), value).is_none(),
            "C program printed {key} twice"
        );
    }
    m
}

/// The x86_32 blkif layout in Rust, keyed as `tests/c/layout_x86_32.c` names it.
fn rust_rows_x86_32() -> Rows {
    let mut r = Rows::default();
    ty!(r, "struct blkif_request", BlkifX86_32Request);
    fields!(r, "struct blkif_request", BlkifX86_32Request {
        "operation" => operation, "nr_segments" => nr_segments, "handle" => handle, "id" => id,
        "sector_number" => sector_number, "seg" => seg,
    });
    ty!(r, "struct blkif_request_discard", BlkifX86_32RequestDiscard);
    fields!(r, "struct blkif_request_discard", BlkifX86_32RequestDiscard {
        "operation" => operation, "flag" => flag, "handle" => handle, "id" => id,
        "sector_number" => sector_number, "nr_sectors" => nr_sectors,
    });
    ty!(
        r,
        "struct blkif_request_indirect",
        BlkifX86_32RequestIndirect
    );
    fields!(r, "struct blkif_request_indirect", BlkifX86_32RequestIndirect {
        "operation" => operation, "indirect_op" => indirect_op, "nr_segments" => nr_segments,
        "id" => id, "sector_number" => sector_number, "handle" => handle,
        "indirect_grefs" => indirect_grefs, "pad" => pad,
    });
    ty!(r, "struct blkif_response", BlkifX86_32Response);
    fields!(r, "struct blkif_response", BlkifX86_32Response {
        "id" => id, "operation" => operation, "status" => status,
    });
    let entry = entry_size::<BlkifX86_32Request, BlkifX86_32Response>();
    r.put("size union blkif_sring_entry".into(), entry);
    r.put(
        "align union blkif_sring_entry".into(),
        align_of::<BlkifX86_32Request>().max(align_of::<BlkifX86_32Response>()),
    );
    r.put("size struct blkif_sring".into(), SRING_HEADER_SIZE + entry);
    r.put("align struct blkif_sring".into(), align_of::<SringHeader>());
    r.put("offset struct blkif_sring.ring".into(), SRING_HEADER_SIZE);
    r.put(
        "const BLKIF_RING_SIZE_ONE_PAGE".into(),
        const_ring_size(XEN_PAGE_SIZE, entry),
    );
    r
}

/// Compile `tests/c/layout_x86_32.c` for i386 into assembly (`-m32 -S`: nothing
/// is linked, so no 32-bit C library is needed) and read its rows.
fn c_rows_x86_32() -> BTreeMap<String, String> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/layout_x86_32.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args([
            "-m32",
            "-ffreestanding",
            "-std=gnu11",
            "-Wall",
            "-Werror",
            "-S",
            "-o",
            "-",
        ])
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} ({e}); install gcc"));
    assert!(
        out.status.success(),
        "compiling {} for i386 failed (gcc with -m32 and libxen-dev are needed):\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = BTreeMap::new();
    for line in String::from_utf8(out.stdout)
        .expect("utf-8 assembly")
        .lines()
    {
        let Some(row) = line.trim().strip_prefix(".ascii \"ROW ") else {
            continue;
        };
        let row = row.strip_suffix("\\n\"").expect("a ROW ends with \\n\"");
        let (key, value) = row.rsplit_once(' ').expect("ROW <key> <value>");
        assert!(
            m.insert(key.to_string(), value.to_string()).is_none(),
            "the i386 program has {key} twice"
        );
    }
    m
}

/// The 32-bit x86 ("x86_32-abi") blkif layout against the real header compiled
/// for i386: 108-byte requests with `id` at 4, 12-byte responses, 32 slots a page.
#[test]
fn x86_32_layouts_match_the_c_headers_compiled_for_i386() {
    let c = c_rows_x86_32();
    let rust = rust_rows_x86_32().0;
    assert_eq!(
        c.keys().collect::<Vec<_>>(),
        rust.keys().collect::<Vec<_>>(),
        "the i386 program and the Rust table list different rows"
    );
    let problems: Vec<String> = c
        .iter()
        .filter(|(k, v)| rust[*k] != **v)
        .map(|(k, v)| format!("{k}: i386 C says {v}, Rust says {}", rust[k]))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(c["size struct blkif_request"], "108");
    assert_eq!(c["size struct blkif_response"], "12");
    eprintln!(
        "{} x86_32 sizes and offsets agree with the header compiled for i386",
        c.len()
    );
}

#[test]
fn rust_layouts_match_the_c_headers() {
    let c = c_rows();
    let rust = rust_rows().0;
    let mut problems = Vec::new();
    for (k, v) in &c {
        match rust.get(k) {
            None => problems.push(format!("C has {k} = {v}, Rust does not mirror it")),
            Some(rv) if rv != v => problems.push(format!("{k}: C says {v}, Rust says {rv}")),
            Some(_) => {}
        }
    }
    for k in rust.keys().filter(|k| !c.contains_key(*k)) {
        problems.push(format!("Rust lists {k}, the C program does not print it"));
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(c.len() > 300, "the C program printed only {} rows", c.len());
    eprintln!(
        "{} sizes, offsets and constants agree with the C headers",
        c.len()
    );
}
