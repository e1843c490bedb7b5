// CNetlink — the only code in ktconnect that talks to the kernel about TUN devices, links, addresses and routes.
//
// This header is what Swift sees, so it holds plain C types only: no libnl objects and no <linux/...> headers
// (their macros and unions do not import cleanly, and they would leak libnl into every Swift module).
// The numbers the kernel defines (IFF_*, RTN_*, RT_SCOPE_*, ...) are repeated here as CNL_* constants; the .c
// files check at compile time that each one still equals the kernel's.
//
// Conventions, the same for every function:
// - The result is 0 on success or a negative errno (-EPERM, -EEXIST, -ENODEV, ...). libnl's own NLE_* codes
//   never escape: the kernel's errno is captured from its NLMSG_ERROR reply and libnl-internal failures are
//   translated to the nearest errno. The Swift layer builds its typed error from that errno and its operation.
// - Out-parameters are written only on success; on failure they are left as they were.
// - Nothing is changed in the kernel when a function fails, except where its comment says otherwise. Arguments
//   are checked before anything is sent; a refusal by the shim says why in cnl_context_last_message, just as
//   the kernel's own refusals do.
// - Lists come back as one malloc'd array that the caller frees with cnl_free(); *out may be NULL when *count
//   is 0.
// - Addresses are in network byte order in struct cnl_ip; the other integers are in host byte order.
//
// Threads: the TUN and capability functions keep no state and may be called from any thread. A
// cnl_context is a netlink socket plus the last kernel message; it must not be used by two threads at once
// (give each thread its own, or guard it with a lock). Different contexts are independent.
//
// Network namespaces: a cnl_context talks to the namespace its creating thread was in when cnl_context_create
// ran, for its whole life, whatever namespace the thread later moves to. cnl_tun_open creates the device in
// the calling thread's current namespace.

#ifndef CNETLINK_H
#define CNETLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Sizes and kernel constants

/// Interface names, including the terminating NUL (the kernel's IFNAMSIZ).
#define CNL_IFNAMSIZ 16
/// Link kinds ("tun", "veth", "wireguard", ...), including the NUL; longer kinds are truncated.
#define CNL_KIND_SIZE 32
/// Room for the kernel's extended-ACK text ("Nexthop device is not up", ...), including the NUL.
#define CNL_MESSAGE_SIZE 256

/// Address families, as in <sys/socket.h>; repeated so that callers need no other header.
#define CNL_AF_INET 2
#define CNL_AF_INET6 10

/// Link flags (IFF_* from <net/if.h>) in cnl_link.flags: the ones a VPN tool looks at.
#define CNL_IFF_UP 0x1u
#define CNL_IFF_LOOPBACK 0x8u
#define CNL_IFF_POINTOPOINT 0x10u
#define CNL_IFF_RUNNING 0x40u
#define CNL_IFF_NOARP 0x80u
#define CNL_IFF_MULTICAST 0x1000u
#define CNL_IFF_LOWER_UP 0x10000u

/// RFC 2863 operational states (IF_OPER_*) in cnl_link.operstate. A TUN whose fd is open and which is up
/// reports UNKNOWN, not UP: the driver has no carrier to speak of.
#define CNL_OPER_UNKNOWN 0
#define CNL_OPER_NOTPRESENT 1
#define CNL_OPER_DOWN 2
#define CNL_OPER_LOWERLAYERDOWN 3
#define CNL_OPER_TESTING 4
#define CNL_OPER_DORMANT 5
#define CNL_OPER_UP 6

/// Address flags (IFA_F_*) in cnl_address.flags.
#define CNL_IFA_F_SECONDARY 0x01u
/// Skip IPv6 duplicate address detection, so the address is usable at once instead of after about a second.
#define CNL_IFA_F_NODAD 0x02u
#define CNL_IFA_F_DADFAILED 0x08u
#define CNL_IFA_F_DEPRECATED 0x20u
/// IPv6 DAD still running: the address cannot be bound yet.
#define CNL_IFA_F_TENTATIVE 0x40u
#define CNL_IFA_F_PERMANENT 0x80u
/// Do not add the prefix route the kernel otherwise derives from the address and its prefix length.
#define CNL_IFA_F_NOPREFIXROUTE 0x200u

/// Route types (RTN_*) in cnl_route.type.
#define CNL_RTN_UNSPEC 0
#define CNL_RTN_UNICAST 1
#define CNL_RTN_LOCAL 2
#define CNL_RTN_BROADCAST 3
#define CNL_RTN_ANYCAST 4
#define CNL_RTN_MULTICAST 5
#define CNL_RTN_BLACKHOLE 6
#define CNL_RTN_UNREACHABLE 7
#define CNL_RTN_PROHIBIT 8
/// Stop the lookup in this table and go on with the next policy rule.
#define CNL_RTN_THROW 9

/// Route scopes (RT_SCOPE_*) in cnl_route.scope.
#define CNL_RT_SCOPE_UNIVERSE 0
#define CNL_RT_SCOPE_SITE 200
#define CNL_RT_SCOPE_LINK 253
#define CNL_RT_SCOPE_HOST 254
/// RT_SCOPE_NOWHERE. Never a real route's scope, so it doubles as "choose for me" when adding (host for
/// local routes, link for a unicast route without a gateway, universe otherwise, as `ip route add` does) and
/// "any scope" when deleting.
#define CNL_RT_SCOPE_AUTO 255

/// Routing tables (RT_TABLE_*); any other number up to 2^32-1 is a custom table. 0 in cnl_route.table
/// means main.
#define CNL_RT_TABLE_DEFAULT 253
#define CNL_RT_TABLE_MAIN 254
#define CNL_RT_TABLE_LOCAL 255

/// Route protocols (RTPROT_*) in cnl_route.protocol: who installed the route.
#define CNL_RTPROT_UNSPEC 0
#define CNL_RTPROT_KERNEL 2
/// What `ip route add` uses when not told otherwise.
#define CNL_RTPROT_BOOT 3
#define CNL_RTPROT_STATIC 4
/// The tag on every route ktctl installs, so that a later run can find and remove the routes of a session
/// that crashed (`ip route show proto 107` lists them too). 0x6b is 'k'. The kernel does not interpret values
/// above RTPROT_STATIC; 107 is in neither the kernel's list in <linux/rtnetlink.h> (0-18, 42, 84, 99, 186-192)
/// nor iproute2's /etc/iproute2/rt_protos, nor used by FRR (186-198), BIRD (12) or keepalived (18).
#define CNL_RTPROT_KTCTL 0x6b

// MARK: - Addresses

/// An IPv4 or IPv6 address with a prefix length. `family` 0 means "no address" wherever a field is optional
/// (a route without a gateway, ...).
struct cnl_ip {
    /// CNL_AF_INET, CNL_AF_INET6, or 0 for none.
    int32_t family;
    /// 0...32 for IPv4, 0...128 for IPv6. A single address carries 32 or 128; a default route 0.
    uint8_t prefix_len;
    /// Network byte order; IPv4 uses the first 4 bytes and leaves the rest zero.
    uint8_t bytes[16];
};

// MARK: - Capability

/// Whether the calling thread has CAP_NET_ADMIN in its effective set, so the Swift layer can say "run as root
/// or grant CAP_NET_ADMIN" before it changes anything. Returns 1 if it has, 0 if not, or a negative errno if
/// capget(2) failed. In a user namespace the answer is about that namespace, which is what governs the network
/// namespaces it owns.
int cnl_have_net_admin(void);

/// The uid owning the TCP socket whose local end is `local`:`local_port` and remote end `remote`:`remote_port`
/// (addresses in network order, 4 bytes for AF_INET, 16 for AF_INET6), asked of the kernel through
/// NETLINK_SOCK_DIAG. 0 on success; -ENOENT when there is no such socket; another negative errno otherwise.
int cnl_tcp_socket_owner(int family, const uint8_t *local, uint16_t local_port, const uint8_t *remote,
                         uint16_t remote_port, uint32_t *out_uid);

// MARK: - TUN devices

/// cnl_tun_open flags.
/// Prefix every packet read or written with a 10-byte struct virtio_net_hdr (KtTun.VirtioNetHeader), which is
/// what makes checksum and segmentation offloads (cnl_tun_set_offload) possible.
#define CNL_TUN_VNET_HDR 0x1u
/// Create (or attach to) a multi-queue device: each cnl_tun_open of the same name adds one queue and one fd.
#define CNL_TUN_MULTI_QUEUE 0x2u
/// Attach to an existing device of that name instead of failing with -EBUSY. Only useful with
/// CNL_TUN_MULTI_QUEUE, to open the second and later queues; the device must have been created with the same
/// CNL_TUN_VNET_HDR and CNL_TUN_MULTI_QUEUE flags.
#define CNL_TUN_ATTACH 0x4u

/// Creates a layer-3 TUN device (IFF_TUN | IFF_NO_PI) and returns its fd, non-blocking and close-on-exec.
///
/// `name` is the wanted name, or NULL or "" to let the kernel choose ("tun0", "tun1", ...); a pattern with
/// one "%d" also works. On success the actual name is written to `out_name` (CNL_IFNAMSIZ bytes) and the fd
/// to `out_fd`.
///
/// The device is not persistent: it lives as long as an fd to it (one per queue) is open, and closing the
/// last fd deletes it together with its addresses and routes. It starts down, with MTU 1500.
///
/// Errors: -ENOENT no /dev/net/tun (module not loaded or not in this container); -EACCES /dev/net/tun not
/// readable and writable; -EPERM no CAP_NET_ADMIN; -EBUSY a device with that name exists (any kind; without
/// CNL_TUN_ATTACH); -EINVAL bad name (too long, "/" or spaces in it), unknown flag, or CNL_TUN_ATTACH to a
/// device whose flags differ. Nothing is created on failure.
int cnl_tun_open(const char *name, uint32_t flags, char *out_name, int *out_fd);

/// Offloads (TUN_F_*) for cnl_tun_set_offload, the same bit values as the kernel's.
/// The reader accepts packets whose transport checksum is not filled in (VIRTIO_NET_HDR_F_NEEDS_CSUM) and
/// the writer may send such packets. Required by all the others.
#define CNL_TUN_OFFLOAD_CSUM 0x01u
/// TCP segmentation offload for IPv4 and IPv6: up to 64 KiB TCP "super-packets" in both directions.
#define CNL_TUN_OFFLOAD_TSO4 0x02u
#define CNL_TUN_OFFLOAD_TSO6 0x04u
/// UDP segmentation offload (Linux 6.2 and later). The kernel takes USO4 and USO6 only together.
#define CNL_TUN_OFFLOAD_USO4 0x20u
#define CNL_TUN_OFFLOAD_USO6 0x40u

/// Tells the kernel which offloads the reader and writer of `fd` handle (TUNSETOFFLOAD); `offloads` 0 turns
/// them all off. Only meaningful on a CNL_TUN_VNET_HDR device, since the virtio header is what describes an
/// offloaded packet.
///
/// Kernels before 6.2 refuse the USO bits; when the kernel answers EINVAL and USO was asked for, the call is
/// retried without USO. `out_accepted` (may be NULL) receives the bits actually in force.
///
/// Errors: -EINVAL an unknown bit, TSO/USO without CSUM, a device without CNL_TUN_VNET_HDR, or the kernel
/// refused even without USO; -EBADF / -ENOTTY `fd` is not a TUN fd. The offloads are unchanged on failure.
int cnl_tun_set_offload(int fd, uint32_t offloads, uint32_t *out_accepted);

/// Sets the size of the header before each packet (TUNSETVNETHDRSZ). The default, and what
/// VirtioNetHeader describes, is CNL_VIRTIO_NET_HDR_LEN; 12 adds virtio 1.0's num_buffers field, which
/// the kernel leaves zero. Errors: -EINVAL `size` below 10; -EBADF / -ENOTTY not a TUN fd. Unchanged on failure.
int cnl_tun_set_vnet_hdr_size(int fd, int size);

/// The virtio_net_hdr that precedes every packet on a CNL_TUN_VNET_HDR device.
#define CNL_VIRTIO_NET_HDR_LEN 10
/// virtio_net_hdr.flags
#define CNL_VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define CNL_VIRTIO_NET_HDR_F_DATA_VALID 2
/// virtio_net_hdr.gso_type
#define CNL_VIRTIO_NET_HDR_GSO_NONE 0
#define CNL_VIRTIO_NET_HDR_GSO_TCPV4 1
#define CNL_VIRTIO_NET_HDR_GSO_UDP 3
#define CNL_VIRTIO_NET_HDR_GSO_TCPV6 4
#define CNL_VIRTIO_NET_HDR_GSO_UDP_L4 5
#define CNL_VIRTIO_NET_HDR_GSO_ECN 0x80

/// The header's fields are decoded and encoded in Swift (KtTun's VirtioNetHeader, little-endian: a TUN uses the
/// host's byte order for them, and every host we build for is little-endian), so it has one tested, fuzzed
/// decoder; the C side only checks the size above against the kernel's struct.

// MARK: - Netlink context

/// A NETLINK_ROUTE socket and the kernel's last error text. Opaque; see the top of this file for threads and
/// network namespaces.
typedef struct cnl_context cnl_context;

/// Opens a context. Errors: -ENOMEM; -EPROTONOSUPPORT / -EMFILE / ... from socket(2).
int cnl_context_create(cnl_context **out);

/// Closes the context's socket and frees it. NULL is allowed.
void cnl_context_destroy(cnl_context *ctx);

/// Why the last call on `ctx` failed: the kernel's extended-ACK text (e.g. "Nexthop has invalid gateway") or the
/// shim's own reason for refusing an argument (e.g. "dst: 10.96.0.1/12 has bits set past the prefix length");
/// "" when the call succeeded or the kernel gave no text. Valid until the next call on `ctx`.
const char *cnl_context_last_message(const cnl_context *ctx);

/// Frees an array returned by a cnl_*_list function. NULL is allowed.
void cnl_free(void *ptr);

// MARK: - Links

/// A network interface.
struct cnl_link {
    int32_t index;
    char name[CNL_IFNAMSIZ];
    uint32_t mtu;
    /// CNL_IFF_* bits.
    uint32_t flags;
    /// CNL_OPER_*.
    uint8_t operstate;
    /// The rtnl link kind ("tun", "veth", "bridge", "wireguard", ...); "" for devices without one (lo, most
    /// physical NICs).
    char kind[CNL_KIND_SIZE];
};

/// All links of the context's namespace. Errors: -ENOMEM; -EINTR the list changed while it was read several
/// times in a row (try again).
int cnl_link_list(cnl_context *ctx, struct cnl_link **out, size_t *count);

/// The link called `name`. Errors: -ENODEV no such link; -EINVAL empty or too long a name.
int cnl_link_get_by_name(cnl_context *ctx, const char *name, struct cnl_link *out);

/// The link with index `index`. Errors: -ENODEV no such link; -EINVAL `index` not positive.
int cnl_link_get_by_index(cnl_context *ctx, int32_t index, struct cnl_link *out);

/// Sets the MTU. Errors: -EPERM no CAP_NET_ADMIN; -ENODEV no such link; -EINVAL outside the device's range
/// (68...65535 for a TUN; IPv6 also needs 1280, and the kernel removes a device's IPv6 addresses when its MTU
/// drops below 1280). Unchanged on failure.
int cnl_link_set_mtu(cnl_context *ctx, int32_t index, uint32_t mtu);

/// Brings the link up or down (IFF_UP), leaving its other flags alone. Errors: -EPERM, -ENODEV. Unchanged on
/// failure.
int cnl_link_set_up(cnl_context *ctx, int32_t index, bool up);

/// Deletes the link and with it its addresses and routes. For a TUN this works even while its fd is open;
/// reads and writes on that fd then fail with EBADFD, and closing it is still needed. Deleting one end of a
/// veth pair deletes both. Errors: -EPERM; -ENODEV; -EOPNOTSUPP a device that cannot be deleted (lo, a physical
/// NIC).
int cnl_link_delete(cnl_context *ctx, int32_t index);

// MARK: - Addresses

/// An address on an interface.
struct cnl_address {
    int32_t ifindex;
    /// The address and its prefix length (host bits are of course allowed here).
    struct cnl_ip local;
    /// The other end of a point-to-point link when it differs from `local`; family 0 otherwise. IPv4 only.
    struct cnl_ip peer;
    /// CNL_IFA_F_* bits.
    uint32_t flags;
    /// CNL_RT_SCOPE_*; ignored when adding (the kernel derives it: host for 127/8, universe otherwise).
    uint8_t scope;
};

/// Adds `addr->local` (and `addr->peer` if its family is set) to `addr->ifindex`, with `addr->flags` (e.g.
/// CNL_IFA_F_NODAD, CNL_IFA_F_NOPREFIXROUTE). Unless CNL_IFA_F_NOPREFIXROUTE is given, the kernel also adds the
/// prefix route for it in the main table (proto kernel).
///
/// Errors: -EEXIST the address is already there; -ENODEV no such link; -EPERM; -EAFNOSUPPORT family not
/// CNL_AF_INET or CNL_AF_INET6, or a peer on an IPv6 address; -EINVAL prefix_len too long, ifindex not
/// positive, or IPv6 on a link whose MTU is below 1280; -EACCES IPv6 disabled on the link. Nothing is added on
/// failure.
int cnl_addr_add(cnl_context *ctx, const struct cnl_address *addr);

/// Removes the address `addr->local` (address and prefix length must match) from `addr->ifindex`, and with
/// it the prefix route the kernel added. Errors: -EADDRNOTAVAIL no such address; -ENODEV; -EPERM;
/// -EAFNOSUPPORT; -EINVAL.
int cnl_addr_delete(cnl_context *ctx, const struct cnl_address *addr);

/// The addresses of one family (0 for both) on one link (0 for all). Errors: -ENOMEM; -EAFNOSUPPORT; -EINTR
/// (see cnl_link_list).
int cnl_addr_list(cnl_context *ctx, int32_t family, int32_t ifindex, struct cnl_address **out, size_t *count);

// MARK: - Routes

/// A route. When adding or replacing, 0 in a field means "the usual default"; when deleting it means "any", so
/// a delete names only what it needs to single out one route.
struct cnl_route {
    /// Destination prefix; its family is the route's family. Host bits must be zero (10.1.0.0/16, not
    /// 10.1.2.3/16). 0.0.0.0/0 and ::/0 are the default routes.
    struct cnl_ip dst;
    /// Next hop; family 0 for a directly connected destination (the usual case for a TUN). Must be the
    /// destination's family.
    struct cnl_ip gateway;
    /// Source address the kernel prefers for traffic along this route; family 0 for none.
    struct cnl_ip prefsrc;
    /// Output interface index; 0 for none (blackhole and the other non-unicast types have none).
    int32_t oif;
    /// Priority; lower wins between equal prefixes. On add 0 is the kernel default (0 for IPv4, 1024 for IPv6).
    uint32_t metric;
    /// Routing table; 0 means CNL_RT_TABLE_MAIN.
    uint32_t table;
    /// CNL_RTPROT_*; ktctl uses CNL_RTPROT_KTCTL. On add 0 becomes CNL_RTPROT_BOOT, like `ip route add`.
    uint8_t protocol;
    /// CNL_RT_SCOPE_*; CNL_RT_SCOPE_AUTO to let it be chosen (add) or match any (delete).
    uint8_t scope;
    /// CNL_RTN_*; on add 0 means unicast.
    uint8_t type;
    /// Number of next hops (lists and route get). A multipath route has several; this struct carries the first
    /// one's oif and gateway. Routes through a nexthop object (`nhid`) are reported through the kernel's
    /// compatibility attributes, so they look like plain routes (net.ipv4.nexthop_compat_mode, on by default).
    uint32_t nexthops;
};

/// Adds a route; fails if one with the same destination, table and metric exists (NLM_F_EXCL).
///
/// Errors: -EEXIST the route exists; -EINVAL dst with host bits set, prefix_len too long, gateway of another
/// family, unknown type, prefsrc not an address of this host, or another combination the kernel refuses (see
/// cnl_context_last_message); -EAFNOSUPPORT bad family; -ENODEV no such oif, or a unicast route with neither
/// oif nor gateway; -ENETUNREACH (IPv4) / -EHOSTUNREACH (IPv6) the gateway is not on a prefix connected to
/// oif (IPv4 drops the connected prefixes of a link that is down, so this is also the answer then); -EPERM.
/// Nothing is added on failure.
int cnl_route_add(cnl_context *ctx, const struct cnl_route *route);

/// Adds the route, or replaces the one with the same destination, table and metric (NLM_F_REPLACE), e.g. to
/// move a prefix to another interface without a moment with no route. Errors as cnl_route_add, without -EEXIST.
int cnl_route_replace(cnl_context *ctx, const struct cnl_route *route);

/// Deletes the first route that matches `route`'s destination and table and each other non-zero field
/// (metric, protocol, type, oif, gateway; scope unless CNL_RT_SCOPE_AUTO). Passing protocol CNL_RTPROT_KTCTL
/// guarantees that only a route of ours is removed.
/// Errors: -ESRCH no matching route; -EINVAL, -EAFNOSUPPORT bad arguments; -EPERM.
int cnl_route_delete(cnl_context *ctx, const struct cnl_route *route);

/// All routes of one family (0 for both) in all tables (main, local, and every custom table), as a dump
/// reports them; IPv6 cached clones are not included. Errors: -ENOMEM; -EAFNOSUPPORT; -EINTR (see
/// cnl_link_list).
int cnl_route_list(cnl_context *ctx, int32_t family, struct cnl_route **out, size_t *count);

/// What `ip route get <dst>` says: how the kernel would send a packet to the address `dst` (its prefix_len is
/// ignored) from this host, after the policy rules.
///
/// `out->oif`, `gateway`, `prefsrc` (the source address it would pick) and `table` come from that lookup;
/// `dst` (the matched prefix, e.g. 10.96.0.0/12), `metric`, `protocol`, `scope` and `type` describe the route it
/// matched, so a caller can tell whose route carries the traffic. One of this host's own addresses gives a
/// CNL_RTN_LOCAL route with oif lo; its table reads main, not local, as long as only the default policy rules
/// exist, because the kernel then keeps the two tables merged.
///
/// Errors: -ENETUNREACH no route (a throw route passes the lookup on to the next rule, so this is also what
/// a throw that nothing catches gives); -EHOSTUNREACH / -EACCES / -EINVAL the matched route is an unreachable
/// / prohibit / blackhole route (both families); -EAFNOSUPPORT. Nothing is written to `out` on failure.
int cnl_route_get(cnl_context *ctx, const struct cnl_ip *dst, struct cnl_route *out);

#ifdef __cplusplus
}
#endif

#endif  // CNETLINK_H
