// The netlink context and the one funnel (cnl_transact) that every link, address and route call uses: it owns
// sequence numbers, ACKs, dump retries, error capture and the translation of libnl's codes to errno.

#include "cnl_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/netlink.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/handlers.h>
#include <netlink/socket.h>

_Static_assert(CNL_AF_INET == AF_INET && CNL_AF_INET6 == AF_INET6, "address families");

/// How many times a dump is started over when the kernel flags it as interrupted (NLM_F_DUMP_INTR: the table
/// changed between two parts). Each retry is cheap and a table rarely changes that fast; past this, the caller
/// gets -EINTR and decides.
#define CNL_DUMP_ATTEMPTS 5

// MARK: - Errors

/// NLE_* → errno. libnl folds many errnos into one NLE code (nl_syserr2nlerr), so this is not an exact inverse;
/// the kernel's errors do not go through it at all (cnl_transact captures them from NLMSG_ERROR). It serves
/// libnl's own failures (allocation, parsing, socket calls), for which the errno named here is the nearest.
static const int cnl_nle_errno[] = {
    [NLE_SUCCESS] = 0,
    [NLE_FAILURE] = EIO,
    [NLE_INTR] = EINTR,
    [NLE_BAD_SOCK] = EBADF,
    [NLE_AGAIN] = EAGAIN,
    [NLE_NOMEM] = ENOMEM,
    [NLE_EXIST] = EEXIST,
    [NLE_INVAL] = EINVAL,
    [NLE_RANGE] = ERANGE,
    [NLE_MSGSIZE] = EMSGSIZE,
    [NLE_OPNOTSUPP] = EOPNOTSUPP,
    [NLE_AF_NOSUPPORT] = EAFNOSUPPORT,
    [NLE_OBJ_NOTFOUND] = ENOENT,
    [NLE_NOATTR] = ENODATA,
    [NLE_MISSING_ATTR] = EINVAL,
    [NLE_AF_MISMATCH] = EAFNOSUPPORT,
    [NLE_SEQ_MISMATCH] = EPROTO,
    [NLE_MSG_OVERFLOW] = EOVERFLOW,
    [NLE_MSG_TRUNC] = EMSGSIZE,
    [NLE_NOADDR] = EADDRNOTAVAIL,
    [NLE_SRCRT_NOSUPPORT] = EOPNOTSUPP,
    [NLE_MSG_TOOSHORT] = EBADMSG,
    [NLE_MSGTYPE_NOSUPPORT] = EOPNOTSUPP,
    [NLE_OBJ_MISMATCH] = EINVAL,
    [NLE_NOCACHE] = ENOENT,
    [NLE_BUSY] = EBUSY,
    [NLE_PROTO_MISMATCH] = EPROTONOSUPPORT,
    [NLE_NOACCESS] = EACCES,
    [NLE_PERM] = EPERM,
    [NLE_PKTLOC_FILE] = ENOENT,
    [NLE_PARSE_ERR] = EBADMSG,
    [NLE_NODEV] = ENODEV,
    [NLE_IMMUTABLE] = EPERM,
    // The dump saw the table change; callers retry, as they would after EINTR.
    [NLE_DUMP_INTR] = EINTR,
    [NLE_ATTRSIZE] = EINVAL,
};

_Static_assert(sizeof(cnl_nle_errno) / sizeof(cnl_nle_errno[0]) == NLE_MAX + 1, "an NLE_* code without errno");

int cnl_errno_from_nle(int nle) {
    int code = nle < 0 ? -nle : nle;
    if (code > NLE_MAX) {
        // A code newer than this table: still a failure, and never mistaken for success.
        return -EIO;
    }
    return -cnl_nle_errno[code];
}

// MARK: - Context

int cnl_context_create(cnl_context **out) {
    cnl_context *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        return -ENOMEM;
    }
    ctx->sock = nl_socket_alloc();
    if (ctx->sock == NULL) {
        free(ctx);
        return -ENOMEM;
    }
    errno = 0;
    int err = nl_connect(ctx->sock, NETLINK_ROUTE);
    if (err < 0) {
        // nl_connect maps socket(2)'s errno lossily; errno itself still holds the original.
        int saved = errno != 0 ? -errno : cnl_errno_from_nle(err);
        nl_socket_free(ctx->sock);
        free(ctx);
        return saved;
    }
    // cnl_transact asks for an ACK itself (not on dumps, where the kernel would send none after NLMSG_DONE)
    // and checks sequence numbers itself, so libnl's defaults for both are turned off.
    nl_socket_disable_auto_ack(ctx->sock);
    // Extended ACKs carry the kernel's reason as text; kernels without them simply ignore the option.
    int one = 1;
    (void)setsockopt(nl_socket_get_fd(ctx->sock), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
    *out = ctx;
    return 0;
}

void cnl_context_destroy(cnl_context *ctx) {
    if (ctx == NULL) {
        return;
    }
    nl_socket_free(ctx->sock);
    free(ctx);
}

const char *cnl_context_last_message(const cnl_context *ctx) {
    return ctx->message;
}

void cnl_begin(cnl_context *ctx) {
    ctx->message[0] = '\0';
}

int cnl_fail(cnl_context *ctx, int err, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(ctx->message, sizeof(ctx->message), format, args);
    va_end(args);
    return err;
}

void cnl_free(void *ptr) {
    free(ptr);
}

// MARK: - The funnel

struct cnl_txn {
    cnl_context *ctx;
    uint32_t seq;
    cnl_reply_fn on_reply;
    void *arg;
    /// First error returned by on_reply (0 if none).
    int reply_error;
    /// Positive errno from the kernel's NLMSG_ERROR or NLMSG_DONE (0 if none).
    int kernel_errno;
    /// The request's last message (ACK, error or NLMSG_DONE) has been read.
    bool done;
};

/// Copies the NLMSGERR_ATTR_MSG text of an error message into the context. The TLVs follow the echoed
/// request, or only its header when the kernel capped the echo.
static void cnl_store_extack(struct cnl_txn *txn, const struct nlmsgerr *err) {
    const struct nlmsghdr *outer = (const struct nlmsghdr *)((const char *)err - NLMSG_HDRLEN);
    if (!(outer->nlmsg_flags & NLM_F_ACK_TLVS)) {
        return;
    }
    size_t offset = NLMSG_HDRLEN + sizeof(*err);
    if (!(outer->nlmsg_flags & NLM_F_CAPPED)) {
        offset += NLMSG_ALIGN(err->msg.nlmsg_len) - NLMSG_HDRLEN;
    }
    if (offset >= outer->nlmsg_len) {
        return;
    }
    struct nlattr *tlvs = (struct nlattr *)((char *)outer + offset);
    struct nlattr *text = nla_find(tlvs, (int)(outer->nlmsg_len - offset), NLMSGERR_ATTR_MSG);
    if (text != NULL) {
        nla_strlcpy(txn->ctx->message, text, sizeof(txn->ctx->message));
    }
}

/// Replies to an earlier request that was abandoned half-read must not be taken for this one's.
static int cnl_on_seq_check(struct nl_msg *msg, void *arg) {
    struct cnl_txn *txn = arg;
    return nlmsg_hdr(msg)->nlmsg_seq == txn->seq ? NL_OK : NL_SKIP;
}

static int cnl_on_valid(struct nl_msg *msg, void *arg) {
    struct cnl_txn *txn = arg;
    if (txn->reply_error == 0 && txn->on_reply != NULL) {
        txn->reply_error = txn->on_reply(msg, txn->arg);
    }
    // Keep reading even after an error: stopping mid-dump would leave the rest queued on the socket.
    return NL_OK;
}

static int cnl_on_ack(struct nl_msg *msg, void *arg) {
    (void)msg;
    struct cnl_txn *txn = arg;
    txn->done = true;
    return NL_STOP;
}

/// NLMSG_DONE carries an int: 0, or the negative errno that ended the dump early (libnl ignores it).
static int cnl_on_finish(struct nl_msg *msg, void *arg) {
    struct cnl_txn *txn = arg;
    struct nlmsghdr *hdr = nlmsg_hdr(msg);
    if (hdr->nlmsg_len >= NLMSG_LENGTH(sizeof(int))) {
        int status;
        memcpy(&status, nlmsg_data(hdr), sizeof(status));
        if (status < 0 && txn->kernel_errno == 0) {
            txn->kernel_errno = -status;
        }
    }
    txn->done = true;
    return NL_STOP;
}

static int cnl_on_error(struct sockaddr_nl *who, struct nlmsgerr *err, void *arg) {
    (void)who;
    struct cnl_txn *txn = arg;
    txn->kernel_errno = err->error < 0 ? -err->error : err->error;
    txn->done = true;
    cnl_store_extack(txn, err);
    // The error is the last message of its request, so nothing is left unread.
    return NL_STOP;
}

/// Reads and drops whatever is still queued (the rest of a dump libnl gave up on), so the next request starts
/// on a clean socket; a dump still running would otherwise make the next one fail with EBUSY. The kernel
/// produces the next dump part as each one is read, so this ends with the dump. A one-byte read is enough:
/// netlink is a datagram socket and drops the unread rest of each message (MSG_TRUNC).
static void cnl_drain(cnl_context *ctx) {
    int fd = nl_socket_get_fd(ctx->sock);
    char byte;
    while (recv(fd, &byte, sizeof(byte), MSG_DONTWAIT | MSG_TRUNC) >= 0 || errno == EINTR) {
    }
}

static int cnl_transact_once(cnl_context *ctx, struct nl_msg *request, struct cnl_txn *txn) {
    struct nlmsghdr *hdr = nlmsg_hdr(request);
    // A fresh sequence number on every attempt, so a retried dump's replies are told from the first one's.
    hdr->nlmsg_seq = NL_AUTO_SEQ;
    int sent = nl_send_auto(ctx->sock, request);
    if (sent < 0) {
        return cnl_errno_from_nle(sent);
    }
    txn->seq = hdr->nlmsg_seq;
    txn->reply_error = 0;
    txn->kernel_errno = 0;
    txn->done = false;

    struct nl_cb *cb = nl_cb_alloc(NL_CB_DEFAULT);
    if (cb == NULL) {
        cnl_drain(ctx);
        return -ENOMEM;
    }
    nl_cb_set(cb, NL_CB_SEQ_CHECK, NL_CB_CUSTOM, cnl_on_seq_check, txn);
    nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, cnl_on_valid, txn);
    nl_cb_set(cb, NL_CB_ACK, NL_CB_CUSTOM, cnl_on_ack, txn);
    nl_cb_set(cb, NL_CB_FINISH, NL_CB_CUSTOM, cnl_on_finish, txn);
    nl_cb_err(cb, NL_CB_CUSTOM, cnl_on_error, txn);
    // One nl_recvmsgs call may end having read only stale messages (skipped by the sequence check), so read
    // until this request's final message has been seen.
    int received;
    do {
        received = nl_recvmsgs_report(ctx->sock, cb);
    } while (received > 0 && !txn->done);
    nl_cb_put(cb);

    if (txn->kernel_errno != 0) {
        return -txn->kernel_errno;
    }
    if (received == 0) {
        // recvmsg(2) returned nothing: not something a netlink socket does while a reply is due.
        return -EPROTO;
    }
    if (received < 0) {
        if (received != -NLE_DUMP_INTR) {
            // libnl stopped early (truncated or unparsable message, no memory): whatever followed is still
            // queued. On NLE_DUMP_INTR libnl itself read on to NLMSG_DONE.
            cnl_drain(ctx);
        }
        return cnl_errno_from_nle(received);
    }
    return txn->reply_error;
}

int cnl_transact(cnl_context *ctx, struct nl_msg *request, cnl_reply_fn on_reply, void (*restart)(void *arg),
                 void *arg) {
    ctx->message[0] = '\0';
    struct nlmsghdr *hdr = nlmsg_hdr(request);
    bool dump = (hdr->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
    if (!dump) {
        // Every change and every get ends with an ACK, so success is known and not merely assumed.
        hdr->nlmsg_flags |= NLM_F_ACK;
    }
    struct cnl_txn txn = {.ctx = ctx, .on_reply = on_reply, .arg = arg};
    int result = cnl_transact_once(ctx, request, &txn);
    for (int attempt = 1; dump && result == -EINTR && attempt < CNL_DUMP_ATTEMPTS; attempt++) {
        if (restart != NULL) {
            restart(arg);
        }
        result = cnl_transact_once(ctx, request, &txn);
    }
    nlmsg_free(request);
    return result;
}

// MARK: - Addresses

size_t cnl_ip_size(int32_t family) {
    switch (family) {
    case CNL_AF_INET:
        return 4;
    case CNL_AF_INET6:
        return 16;
    default:
        return 0;
    }
}

int cnl_ip_check(cnl_context *ctx, const struct cnl_ip *ip, bool require_network, const char *field) {
    size_t size = cnl_ip_size(ip->family);
    if (size == 0) {
        return cnl_fail(ctx, -EAFNOSUPPORT, "%s: family %d is neither AF_INET nor AF_INET6", field, ip->family);
    }
    if (ip->prefix_len > size * 8) {
        return cnl_fail(ctx, -EINVAL, "%s: prefix length %u is longer than %zu", field, ip->prefix_len, size * 8);
    }
    if (require_network) {
        // Every bit past the prefix must be zero, in every byte up to 16: IPv4 leaves 4...15 zero too.
        for (size_t bit = ip->prefix_len; bit < 128; bit++) {
            if (ip->bytes[bit / 8] & (0x80u >> (bit % 8))) {
                char text[INET6_ADDRSTRLEN] = "?";
                inet_ntop(ip->family, ip->bytes, text, sizeof(text));
                return cnl_fail(ctx, -EINVAL, "%s: %s/%u has bits set past the prefix length", field, text,
                                ip->prefix_len);
            }
        }
    }
    return 0;
}

struct nl_addr *cnl_ip_to_nl(const struct cnl_ip *ip) {
    struct nl_addr *addr = nl_addr_build(ip->family, ip->bytes, cnl_ip_size(ip->family));
    if (addr != NULL) {
        nl_addr_set_prefixlen(addr, ip->prefix_len);
    }
    return addr;
}

void cnl_ip_from_nl(const struct nl_addr *addr, struct cnl_ip *out) {
    memset(out, 0, sizeof(*out));
    if (addr == NULL) {
        return;
    }
    int family = nl_addr_get_family(addr);
    size_t size = cnl_ip_size(family);
    if (size == 0) {
        return;
    }
    out->family = family;
    out->prefix_len = (uint8_t)nl_addr_get_prefixlen(addr);
    // A default route comes without RTA_DST: an empty address, all zero bytes.
    size_t len = nl_addr_get_len(addr);
    if (len == size) {
        memcpy(out->bytes, nl_addr_get_binary_addr(addr), size);
    }
}

// MARK: - Collecting lists

void *cnl_vec_push(struct cnl_vec *vec) {
    if (vec->count == vec->capacity) {
        size_t capacity = vec->capacity == 0 ? 16 : vec->capacity * 2;
        void *items = realloc(vec->items, capacity * vec->elem_size);
        if (items == NULL) {
            return NULL;
        }
        vec->items = items;
        vec->capacity = capacity;
    }
    void *item = (char *)vec->items + vec->count * vec->elem_size;
    memset(item, 0, vec->elem_size);
    vec->count++;
    return item;
}

void cnl_collect_restart(void *collect) {
    ((struct cnl_collect *)collect)->vec.count = 0;
}

int cnl_collect_finish(struct cnl_collect *collect, void *out, size_t *count) {
    void **items = out;
    if (collect->vec.count == 0) {
        free(collect->vec.items);
        collect->vec.items = NULL;
    }
    *items = collect->vec.items;
    *count = collect->vec.count;
    collect->vec.items = NULL;
    return 0;
}
