// TUN devices through /dev/net/tun and its ioctls, the virtio_net_hdr that offloaded packets carry, and the
// CAP_NET_ADMIN check. No netlink here: a TUN is created by the fd that owns it.

#define _GNU_SOURCE

#include "CNetlink.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/capability.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>

// UDP segmentation offload arrived in Linux 6.2 (if_tun.h, virtio_net.h); older build headers lack the names
// but the numbers are ABI, and the running kernel is what decides (cnl_tun_set_offload probes it).
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif
#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5
#endif

_Static_assert(CNL_IFNAMSIZ == IFNAMSIZ, "IFNAMSIZ");
_Static_assert(CNL_TUN_OFFLOAD_CSUM == TUN_F_CSUM && CNL_TUN_OFFLOAD_TSO4 == TUN_F_TSO4
                   && CNL_TUN_OFFLOAD_TSO6 == TUN_F_TSO6 && CNL_TUN_OFFLOAD_USO4 == TUN_F_USO4
                   && CNL_TUN_OFFLOAD_USO6 == TUN_F_USO6,
               "TUN_F_*");
_Static_assert(CNL_VIRTIO_NET_HDR_LEN == sizeof(struct virtio_net_hdr), "virtio_net_hdr size");
_Static_assert(CNL_VIRTIO_NET_HDR_F_NEEDS_CSUM == VIRTIO_NET_HDR_F_NEEDS_CSUM
                   && CNL_VIRTIO_NET_HDR_F_DATA_VALID == VIRTIO_NET_HDR_F_DATA_VALID
                   && CNL_VIRTIO_NET_HDR_GSO_NONE == VIRTIO_NET_HDR_GSO_NONE
                   && CNL_VIRTIO_NET_HDR_GSO_TCPV4 == VIRTIO_NET_HDR_GSO_TCPV4
                   && CNL_VIRTIO_NET_HDR_GSO_UDP == VIRTIO_NET_HDR_GSO_UDP
                   && CNL_VIRTIO_NET_HDR_GSO_TCPV6 == VIRTIO_NET_HDR_GSO_TCPV6
                   && CNL_VIRTIO_NET_HDR_GSO_UDP_L4 == VIRTIO_NET_HDR_GSO_UDP_L4
                   && CNL_VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_ECN,
               "VIRTIO_NET_HDR_*");

#define CNL_TUN_FLAGS (CNL_TUN_VNET_HDR | CNL_TUN_MULTI_QUEUE | CNL_TUN_ATTACH)
#define CNL_TUN_OFFLOADS \
    (CNL_TUN_OFFLOAD_CSUM | CNL_TUN_OFFLOAD_TSO4 | CNL_TUN_OFFLOAD_TSO6 | CNL_TUN_OFFLOAD_USO4 | CNL_TUN_OFFLOAD_USO6)
#define CNL_TUN_OFFLOAD_USO (CNL_TUN_OFFLOAD_USO4 | CNL_TUN_OFFLOAD_USO6)

/// The one way this file calls ioctl(2): EINTR retried, the result as 0 or a negative errno.
static int cnl_ioctl(int fd, unsigned long request, void *arg) {
    for (;;) {
        if (ioctl(fd, request, arg) == 0) {
            return 0;
        }
        if (errno != EINTR) {
            return -errno;
        }
    }
}

// MARK: - Capability

int cnl_have_net_admin(void) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &header, data) != 0) {
        return -errno;
    }
    return (data[CAP_TO_INDEX(CAP_NET_ADMIN)].effective & CAP_TO_MASK(CAP_NET_ADMIN)) != 0;
}

// MARK: - TUN

int cnl_tun_open(const char *name, uint32_t flags, char *out_name, int *out_fd) {
    if (flags & ~CNL_TUN_FLAGS) {
        return -EINVAL;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    if (name != NULL) {
        size_t length = strlen(name);
        if (length >= IFNAMSIZ) {
            return -EINVAL;
        }
        memcpy(ifr.ifr_name, name, length);
    }
    if ((flags & CNL_TUN_ATTACH) && ifr.ifr_name[0] == '\0') {
        return -EINVAL;
    }
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    if (flags & CNL_TUN_VNET_HDR) {
        ifr.ifr_flags |= IFF_VNET_HDR;
    }
    if (flags & CNL_TUN_MULTI_QUEUE) {
        ifr.ifr_flags |= IFF_MULTI_QUEUE;
    }
    if (!(flags & CNL_TUN_ATTACH)) {
        // Without it the kernel would quietly attach to a TUN of that name left by someone else (or answer
        // EINVAL for a non-TUN device); a taken name should instead say so, as -EBUSY.
        ifr.ifr_flags |= IFF_TUN_EXCL;
    }

    int fd;
    do {
        fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return -errno;
    }
    int err = cnl_ioctl(fd, TUNSETIFF, &ifr);
    if (err < 0) {
        // Closing the fd undoes everything: a TUN that was not set up is never created.
        close(fd);
        return err;
    }
    memcpy(out_name, ifr.ifr_name, IFNAMSIZ);
    out_name[IFNAMSIZ - 1] = '\0';
    *out_fd = fd;
    return 0;
}

int cnl_tun_set_offload(int fd, uint32_t offloads, uint32_t *out_accepted) {
    if (offloads & ~CNL_TUN_OFFLOADS) {
        return -EINVAL;
    }
    if (offloads != 0 && !(offloads & CNL_TUN_OFFLOAD_CSUM)) {
        // Segmentation without checksum offload is meaningless and the kernel answers it with the same EINVAL
        // as an unknown bit; saying so here keeps the USO retry below from taking it for an old kernel.
        return -EINVAL;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    int err = cnl_ioctl(fd, TUNGETIFF, &ifr);
    if (err < 0) {
        return err;
    }
    if (offloads != 0 && !(ifr.ifr_flags & IFF_VNET_HDR)) {
        // Without the header an offloaded packet cannot be described, and the reader would see 64 KiB IP
        // packets with wrong lengths and no checksums.
        return -EINVAL;
    }
    uint32_t accepted = offloads;
    // TUNSETOFFLOAD takes its argument by value, not through a pointer.
    err = ioctl(fd, TUNSETOFFLOAD, (unsigned long)accepted) == 0 ? 0 : -errno;
    if (err == -EINVAL && (accepted & CNL_TUN_OFFLOAD_USO)) {
        // Before 6.2 the kernel refuses the unknown USO bits as a whole; the rest may still be fine. A kernel
        // refusal leaves its offloads as they were, so the retry starts from the same state.
        accepted &= ~CNL_TUN_OFFLOAD_USO;
        err = ioctl(fd, TUNSETOFFLOAD, (unsigned long)accepted) == 0 ? 0 : -errno;
    }
    if (err < 0) {
        return err;
    }
    if (out_accepted != NULL) {
        *out_accepted = accepted;
    }
    return 0;
}

int cnl_tun_set_vnet_hdr_size(int fd, int size) {
    return cnl_ioctl(fd, TUNSETVNETHDRSZ, &size);
}
