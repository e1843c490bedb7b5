// The owner (uid) of one TCP socket, asked of the kernel by its four-tuple through NETLINK_SOCK_DIAG: one request,
// one answer, no table to read (ss(8) asks the same way). Plain netlink: libnl has no sock_diag in libnl-route.

#include "CNetlink.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int cnl_tcp_socket_owner(int family, const uint8_t *local, uint16_t local_port, const uint8_t *remote,
                         uint16_t remote_port, uint32_t *out_uid) {
    if (family != AF_INET && family != AF_INET6) return -EAFNOSUPPORT;
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    struct timeval timeout = {.tv_sec = 1, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

    struct {
        struct nlmsghdr header;
        struct inet_diag_req_v2 request;
    } message;
    memset(&message, 0, sizeof message);
    message.header.nlmsg_len = sizeof message;
    message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    message.header.nlmsg_flags = NLM_F_REQUEST;
    message.header.nlmsg_seq = 1;
    message.request.sdiag_family = (uint8_t)family;
    message.request.sdiag_protocol = IPPROTO_TCP;
    message.request.idiag_states = ~0U;
    message.request.id.idiag_sport = htons(local_port);
    message.request.id.idiag_dport = htons(remote_port);
    size_t length = family == AF_INET ? 4 : 16;
    memcpy(message.request.id.idiag_src, local, length);
    memcpy(message.request.id.idiag_dst, remote, length);
    message.request.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    message.request.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;

    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &message, sizeof message, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    union {
        struct nlmsghdr header;
        char bytes[8192];
    } answer;
    ssize_t received = recv(fd, &answer, sizeof answer, 0);
    int error = received < 0 ? errno : 0;
    close(fd);
    if (received < 0) return -error;
    if (received < (ssize_t)sizeof(struct nlmsghdr) || !NLMSG_OK(&answer.header, (size_t)received)) return -EBADMSG;
    if (answer.header.nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *failure = NLMSG_DATA(&answer.header);
        return failure->error != 0 ? failure->error : -ENOENT;
    }
    if (answer.header.nlmsg_type != SOCK_DIAG_BY_FAMILY
        || answer.header.nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
        return -EBADMSG;
    struct inet_diag_msg *found = NLMSG_DATA(&answer.header);
    *out_uid = found->idiag_uid;
    return 0;
}
