/* Prints the layout of every Xen ABI type xenio mirrors, as the C compiler sees
 * it through the real headers (Debian libxen-dev and linux-libc-dev). The Rust
 * test tests/c_layout.rs compares each line with the Rust definitions. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/ring.h>
#include <xen/io/blkif.h>
#include <xen/io/netif.h>
#include <xen/io/xenbus.h>
#include <xen/io/xs_wire.h>
#include <xen/io/protocols.h>
#include <xen/evtchn.h>
#include <xen/gntdev.h>
#include <xen/gntalloc.h>

#define T(ty) printf("size %s %zu\nalign %s %zu\n", #ty, sizeof(ty), #ty, _Alignof(ty))
#define F(ty, f) printf("offset %s.%s %zu\n", #ty, #f, offsetof(ty, f))
#define C(x) printf("const %s %lld\n", #x, (long long)(x))

int main(void) {
    /* io/ring.h */
    T(struct blkif_sring);
    F(struct blkif_sring, req_prod); F(struct blkif_sring, req_event);
    F(struct blkif_sring, rsp_prod); F(struct blkif_sring, rsp_event);
    F(struct blkif_sring, pvt); F(struct blkif_sring, __pad); F(struct blkif_sring, ring);
    T(union blkif_sring_entry);
    T(union netif_tx_sring_entry);
    T(union netif_rx_sring_entry);

    /* io/blkif.h */
    T(struct blkif_request_segment);
    F(struct blkif_request_segment, gref); F(struct blkif_request_segment, first_sect);
    F(struct blkif_request_segment, last_sect);
    T(struct blkif_request);
    F(struct blkif_request, operation); F(struct blkif_request, nr_segments);
    F(struct blkif_request, handle); F(struct blkif_request, id);
    F(struct blkif_request, sector_number); F(struct blkif_request, seg);
    T(struct blkif_request_discard);
    F(struct blkif_request_discard, operation); F(struct blkif_request_discard, flag);
    F(struct blkif_request_discard, handle); F(struct blkif_request_discard, id);
    F(struct blkif_request_discard, sector_number); F(struct blkif_request_discard, nr_sectors);
    T(struct blkif_request_indirect);
    F(struct blkif_request_indirect, operation); F(struct blkif_request_indirect, indirect_op);
    F(struct blkif_request_indirect, nr_segments); F(struct blkif_request_indirect, id);
    F(struct blkif_request_indirect, sector_number); F(struct blkif_request_indirect, handle);
    F(struct blkif_request_indirect, indirect_grefs);
    T(struct blkif_response);
    F(struct blkif_response, id); F(struct blkif_response, operation); F(struct blkif_response, status);
    C(BLKIF_OP_READ); C(BLKIF_OP_WRITE); C(BLKIF_OP_WRITE_BARRIER); C(BLKIF_OP_FLUSH_DISKCACHE);
    C(BLKIF_OP_RESERVED_1); C(BLKIF_OP_DISCARD); C(BLKIF_OP_INDIRECT);
    C(BLKIF_MAX_SEGMENTS_PER_REQUEST); C(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
    C(BLKIF_DISCARD_SECURE);
    C(BLKIF_RSP_EOPNOTSUPP); C(BLKIF_RSP_ERROR); C(BLKIF_RSP_OKAY);
    C(VDISK_CDROM); C(VDISK_REMOVABLE); C(VDISK_READONLY);

    /* io/netif.h */
    T(struct netif_tx_request);
    F(struct netif_tx_request, gref); F(struct netif_tx_request, offset);
    F(struct netif_tx_request, flags); F(struct netif_tx_request, id); F(struct netif_tx_request, size);
    T(struct netif_tx_response);
    F(struct netif_tx_response, id); F(struct netif_tx_response, status);
    T(struct netif_rx_request);
    F(struct netif_rx_request, id); F(struct netif_rx_request, pad); F(struct netif_rx_request, gref);
    T(struct netif_rx_response);
    F(struct netif_rx_response, id); F(struct netif_rx_response, offset);
    F(struct netif_rx_response, flags); F(struct netif_rx_response, status);
    T(struct netif_extra_info);
    F(struct netif_extra_info, type); F(struct netif_extra_info, flags); F(struct netif_extra_info, u);
    F(struct netif_extra_info, u.gso.size); F(struct netif_extra_info, u.gso.type);
    F(struct netif_extra_info, u.gso.pad); F(struct netif_extra_info, u.gso.features);
    F(struct netif_extra_info, u.mcast.addr);
    F(struct netif_extra_info, u.hash.type); F(struct netif_extra_info, u.hash.algorithm);
    F(struct netif_extra_info, u.hash.value);
    F(struct netif_extra_info, u.pad);
    C(XEN_NETIF_NR_SLOTS_MIN); C(XEN_NETIF_MAX_TX_SIZE);
    C(NETTXF_csum_blank); C(NETTXF_data_validated); C(NETTXF_more_data); C(NETTXF_extra_info);
    C(NETRXF_data_validated); C(NETRXF_csum_blank); C(NETRXF_more_data); C(NETRXF_extra_info);
    C(NETRXF_gso_prefix);
    C(XEN_NETIF_EXTRA_TYPE_NONE); C(XEN_NETIF_EXTRA_TYPE_GSO); C(XEN_NETIF_EXTRA_TYPE_MCAST_ADD);
    C(XEN_NETIF_EXTRA_TYPE_MCAST_DEL); C(XEN_NETIF_EXTRA_TYPE_HASH); C(XEN_NETIF_EXTRA_TYPE_MAX);
    C(XEN_NETIF_EXTRA_FLAG_MORE);
    C(XEN_NETIF_GSO_TYPE_NONE); C(XEN_NETIF_GSO_TYPE_TCPV4); C(XEN_NETIF_GSO_TYPE_TCPV6);
    C(NETIF_RSP_DROPPED); C(NETIF_RSP_ERROR); C(NETIF_RSP_OKAY); C(NETIF_RSP_NULL);

    /* io/xenbus.h */
    C(XenbusStateUnknown); C(XenbusStateInitialising); C(XenbusStateInitWait);
    C(XenbusStateInitialised); C(XenbusStateConnected); C(XenbusStateClosing);
    C(XenbusStateClosed); C(XenbusStateReconfiguring); C(XenbusStateReconfigured);

    /* io/xs_wire.h */
    T(struct xsd_sockmsg);
    F(struct xsd_sockmsg, type); F(struct xsd_sockmsg, req_id);
    F(struct xsd_sockmsg, tx_id); F(struct xsd_sockmsg, len);
    C(XS_CONTROL); C(XS_DIRECTORY); C(XS_READ); C(XS_GET_PERMS); C(XS_WATCH); C(XS_UNWATCH);
    C(XS_TRANSACTION_START); C(XS_TRANSACTION_END); C(XS_INTRODUCE); C(XS_RELEASE);
    C(XS_GET_DOMAIN_PATH); C(XS_WRITE); C(XS_MKDIR); C(XS_RM); C(XS_SET_PERMS);
    C(XS_WATCH_EVENT); C(XS_ERROR); C(XS_IS_DOMAIN_INTRODUCED); C(XS_RESUME); C(XS_SET_TARGET);
    C(XS_RESET_WATCHES); C(XS_DIRECTORY_PART); C(XS_TYPE_COUNT); C(XS_INVALID);
    C(XS_WATCH_PATH); C(XS_WATCH_TOKEN);
    C(XENSTORE_RING_SIZE); C(XENSTORE_PAYLOAD_MAX); C(XENSTORE_ABS_PATH_MAX);
    C(XENSTORE_REL_PATH_MAX);
    C(XENSTORE_SERVER_FEATURE_RECONNECTION); C(XENSTORE_SERVER_FEATURE_ERROR);
    C(XENSTORE_CONNECTED); C(XENSTORE_RECONNECT);
    C(XENSTORE_ERROR_NONE); C(XENSTORE_ERROR_COMM); C(XENSTORE_ERROR_RINGIDX);
    C(XENSTORE_ERROR_PROTO);
    for (size_t i = 0; i < sizeof(xsd_errors) / sizeof(xsd_errors[0]); i++)
        printf("xsderror %zu %s %d\n", i, xsd_errors[i].errstring, xsd_errors[i].errnum);
    printf("str XEN_IO_PROTO_ABI_X86_32 %s\nstr XEN_IO_PROTO_ABI_X86_64 %s\nstr XEN_IO_PROTO_ABI_ARM %s\n",
           XEN_IO_PROTO_ABI_X86_32, XEN_IO_PROTO_ABI_X86_64, XEN_IO_PROTO_ABI_ARM);
    printf("str XS_WRITE_NONE %s\nstr XS_WRITE_CREATE %s\nstr XS_WRITE_CREATE_EXCL %s\n",
           XS_WRITE_NONE, XS_WRITE_CREATE, XS_WRITE_CREATE_EXCL);
    T(struct xenstore_domain_interface);
    F(struct xenstore_domain_interface, req); F(struct xenstore_domain_interface, rsp);
    F(struct xenstore_domain_interface, req_cons); F(struct xenstore_domain_interface, req_prod);
    F(struct xenstore_domain_interface, rsp_cons); F(struct xenstore_domain_interface, rsp_prod);
    F(struct xenstore_domain_interface, server_features);
    F(struct xenstore_domain_interface, connection); F(struct xenstore_domain_interface, error);

    /* grant_table.h */
    T(struct grant_entry_v1);
    F(struct grant_entry_v1, flags); F(struct grant_entry_v1, domid); F(struct grant_entry_v1, frame);
    C(GTF_invalid); C(GTF_permit_access); C(GTF_accept_transfer); C(GTF_transitive);
    C(GTF_type_mask); C(GTF_readonly); C(GTF_reading); C(GTF_writing); C(GTF_PWT); C(GTF_PCD);
    C(GTF_PAT); C(GTF_sub_page); C(GTF_transfer_committed); C(GTF_transfer_completed);
    C(GNTCOPY_source_gref); C(GNTCOPY_dest_gref);
    C(GNTST_okay); C(GNTST_general_error); C(GNTST_bad_domain); C(GNTST_bad_gntref);
    C(GNTST_bad_handle); C(GNTST_bad_virt_addr); C(GNTST_bad_dev_addr); C(GNTST_no_device_space);
    C(GNTST_permission_denied); C(GNTST_bad_page); C(GNTST_bad_copy_arg);
    C(GNTST_address_too_big); C(GNTST_eagain); C(GNTST_no_space);
    C(DOMID_FIRST_RESERVED); C(DOMID_SELF); C(DOMID_INVALID);

    /* Linux xen/evtchn.h */
    T(struct ioctl_evtchn_bind_virq); F(struct ioctl_evtchn_bind_virq, virq);
    T(struct ioctl_evtchn_bind_interdomain);
    F(struct ioctl_evtchn_bind_interdomain, remote_domain);
    F(struct ioctl_evtchn_bind_interdomain, remote_port);
    T(struct ioctl_evtchn_bind_unbound_port); F(struct ioctl_evtchn_bind_unbound_port, remote_domain);
    T(struct ioctl_evtchn_unbind); F(struct ioctl_evtchn_unbind, port);
    T(struct ioctl_evtchn_notify); F(struct ioctl_evtchn_notify, port);
    T(struct ioctl_evtchn_restrict_domid); F(struct ioctl_evtchn_restrict_domid, domid);
    C(IOCTL_EVTCHN_BIND_VIRQ); C(IOCTL_EVTCHN_BIND_INTERDOMAIN); C(IOCTL_EVTCHN_BIND_UNBOUND_PORT);
    C(IOCTL_EVTCHN_UNBIND); C(IOCTL_EVTCHN_NOTIFY); C(IOCTL_EVTCHN_RESET);
    C(IOCTL_EVTCHN_RESTRICT_DOMID);

    /* Linux xen/gntdev.h */
    T(struct ioctl_gntdev_grant_ref);
    F(struct ioctl_gntdev_grant_ref, domid); F(struct ioctl_gntdev_grant_ref, ref);
    T(struct ioctl_gntdev_map_grant_ref);
    F(struct ioctl_gntdev_map_grant_ref, count); F(struct ioctl_gntdev_map_grant_ref, pad);
    F(struct ioctl_gntdev_map_grant_ref, index); F(struct ioctl_gntdev_map_grant_ref, refs);
    T(struct ioctl_gntdev_unmap_grant_ref);
    F(struct ioctl_gntdev_unmap_grant_ref, index); F(struct ioctl_gntdev_unmap_grant_ref, count);
    F(struct ioctl_gntdev_unmap_grant_ref, pad);
    T(struct ioctl_gntdev_get_offset_for_vaddr);
    F(struct ioctl_gntdev_get_offset_for_vaddr, vaddr);
    F(struct ioctl_gntdev_get_offset_for_vaddr, offset);
    F(struct ioctl_gntdev_get_offset_for_vaddr, count);
    F(struct ioctl_gntdev_get_offset_for_vaddr, pad);
    T(struct ioctl_gntdev_set_max_grants); F(struct ioctl_gntdev_set_max_grants, count);
    T(struct ioctl_gntdev_unmap_notify);
    F(struct ioctl_gntdev_unmap_notify, index); F(struct ioctl_gntdev_unmap_notify, action);
    F(struct ioctl_gntdev_unmap_notify, event_channel_port);
    T(struct gntdev_grant_copy_segment);
    F(struct gntdev_grant_copy_segment, source); F(struct gntdev_grant_copy_segment, dest);
    F(struct gntdev_grant_copy_segment, source.virt);
    F(struct gntdev_grant_copy_segment, source.foreign.ref);
    F(struct gntdev_grant_copy_segment, source.foreign.offset);
    F(struct gntdev_grant_copy_segment, source.foreign.domid);
    F(struct gntdev_grant_copy_segment, len); F(struct gntdev_grant_copy_segment, flags);
    F(struct gntdev_grant_copy_segment, status);
    T(struct ioctl_gntdev_grant_copy);
    F(struct ioctl_gntdev_grant_copy, count); F(struct ioctl_gntdev_grant_copy, segments);
    C(IOCTL_GNTDEV_MAP_GRANT_REF); C(IOCTL_GNTDEV_UNMAP_GRANT_REF);
    C(IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR); C(IOCTL_GNTDEV_SET_MAX_GRANTS);
    C(IOCTL_GNTDEV_SET_UNMAP_NOTIFY); C(IOCTL_GNTDEV_GRANT_COPY);
    C(UNMAP_NOTIFY_CLEAR_BYTE); C(UNMAP_NOTIFY_SEND_EVENT);

    /* Linux xen/gntalloc.h */
    T(struct ioctl_gntalloc_alloc_gref);
    F(struct ioctl_gntalloc_alloc_gref, domid); F(struct ioctl_gntalloc_alloc_gref, flags);
    F(struct ioctl_gntalloc_alloc_gref, count); F(struct ioctl_gntalloc_alloc_gref, index);
    F(struct ioctl_gntalloc_alloc_gref, gref_ids);
    T(struct ioctl_gntalloc_dealloc_gref);
    F(struct ioctl_gntalloc_dealloc_gref, index); F(struct ioctl_gntalloc_dealloc_gref, count);
    T(struct ioctl_gntalloc_unmap_notify);
    F(struct ioctl_gntalloc_unmap_notify, index); F(struct ioctl_gntalloc_unmap_notify, action);
    F(struct ioctl_gntalloc_unmap_notify, event_channel_port);
    C(IOCTL_GNTALLOC_ALLOC_GREF); C(IOCTL_GNTALLOC_DEALLOC_GREF); C(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY);
    C(GNTALLOC_FLAG_WRITABLE);
    return 0;
}
