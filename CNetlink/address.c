// Addresses: add, delete, list, for IPv4 and IPv6, with rtnl_addr_* and cnl_transact.

#include "cnl_internal.h"

#include <errno.h>
#include <string.h>

#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <netlink/route/addr.h>

_Static_assert(CNL_IFA_F_SECONDARY == IFA_F_SECONDARY && CNL_IFA_F_NODAD == IFA_F_NODAD
                   && CNL_IFA_F_DADFAILED == IFA_F_DADFAILED && CNL_IFA_F_DEPRECATED == IFA_F_DEPRECATED
                   && CNL_IFA_F_TENTATIVE == IFA_F_TENTATIVE && CNL_IFA_F_PERMANENT == IFA_F_PERMANENT
                   && CNL_IFA_F_NOPREFIXROUTE == IFA_F_NOPREFIXROUTE,
               "IFA_F_*");

/// An rtnl_addr for `addr`, after checking it, in `*out`. Returns 0 or a negative errno.
static int cnl_addr_to_nl(cnl_context *ctx, const struct cnl_address *addr, struct rtnl_addr **out) {
    if (addr->ifindex <= 0) {
        return cnl_fail(ctx, -EINVAL, "ifindex %d is not a link index", addr->ifindex);
    }
    int err = cnl_ip_check(ctx, &addr->local, false, "local");
    if (err < 0) {
        return err;
    }
    if (addr->peer.family != 0) {
        // libnl (rtnl_addr_set_peer) and the kernel know peers for IPv4 only.
        if (addr->peer.family != CNL_AF_INET || addr->local.family != CNL_AF_INET) {
            return cnl_fail(ctx, -EAFNOSUPPORT, "peer: only IPv4 addresses can have a peer");
        }
        if ((err = cnl_ip_check(ctx, &addr->peer, false, "peer")) < 0) {
            return err;
        }
    }
    struct rtnl_addr *nl = rtnl_addr_alloc();
    struct nl_addr *local = cnl_ip_to_nl(&addr->local);
    struct nl_addr *peer = addr->peer.family != 0 ? cnl_ip_to_nl(&addr->peer) : NULL;
    if (nl == NULL || local == NULL || (addr->peer.family != 0 && peer == NULL)) {
        err = -ENOMEM;
        goto out;
    }
    rtnl_addr_set_ifindex(nl, addr->ifindex);
    rtnl_addr_set_family(nl, addr->local.family);
    if ((err = rtnl_addr_set_local(nl, local)) < 0 || (peer != NULL && (err = rtnl_addr_set_peer(nl, peer)) < 0)) {
        err = cnl_errno_from_nle(err);
        goto out;
    }
    // Set last: rtnl_addr_set_local/peer derive a prefix length of their own.
    rtnl_addr_set_prefixlen(nl, addr->local.prefix_len);
    if (addr->flags != 0) {
        rtnl_addr_set_flags(nl, addr->flags);
    }
    *out = nl;
    nl = NULL;
    err = 0;
out:
    nl_addr_put(local);
    nl_addr_put(peer);
    if (nl != NULL) {
        rtnl_addr_put(nl);
    }
    return err;
}

int cnl_addr_add(cnl_context *ctx, const struct cnl_address *addr) {
    cnl_begin(ctx);
    struct rtnl_addr *nl = NULL;
    int err = cnl_addr_to_nl(ctx, addr, &nl);
    if (err < 0) {
        return err;
    }
    struct nl_msg *request = NULL;
    // NLM_F_EXCL: an address that is already there is an error, not a silent success.
    err = rtnl_addr_build_add_request(nl, NLM_F_EXCL, &request);
    rtnl_addr_put(nl);
    if (err < 0) {
        return cnl_errno_from_nle(err);
    }
    return cnl_transact(ctx, request, NULL, NULL, NULL);
}

int cnl_addr_delete(cnl_context *ctx, const struct cnl_address *addr) {
    cnl_begin(ctx);
    struct rtnl_addr *nl = NULL;
    int err = cnl_addr_to_nl(ctx, addr, &nl);
    if (err < 0) {
        return err;
    }
    struct nl_msg *request = NULL;
    err = rtnl_addr_build_delete_request(nl, 0, &request);
    rtnl_addr_put(nl);
    if (err < 0) {
        return cnl_errno_from_nle(err);
    }
    return cnl_transact(ctx, request, NULL, NULL, NULL);
}

// MARK: - Listing

struct cnl_addr_parse {
    struct cnl_collect collect;
    int error;
};

static void cnl_addr_on_object(struct nl_object *object, void *arg) {
    struct cnl_addr_parse *parse = arg;
    struct rtnl_addr *nl = (struct rtnl_addr *)object;
    if (nl_object_get_msgtype(object) != RTM_NEWADDR) {
        return;
    }
    int family = rtnl_addr_get_family(nl);
    if (cnl_ip_size(family) == 0 || (parse->collect.family != 0 && family != parse->collect.family)) {
        return;
    }
    if (parse->collect.ifindex != 0 && rtnl_addr_get_ifindex(nl) != parse->collect.ifindex) {
        return;
    }
    struct cnl_address *out = cnl_vec_push(&parse->collect.vec);
    if (out == NULL) {
        parse->error = -ENOMEM;
        return;
    }
    out->ifindex = rtnl_addr_get_ifindex(nl);
    cnl_ip_from_nl(rtnl_addr_get_local(nl), &out->local);
    // The prefix length lives on the address object, not (reliably) on the nl_addr.
    out->local.prefix_len = (uint8_t)rtnl_addr_get_prefixlen(nl);
    cnl_ip_from_nl(rtnl_addr_get_peer(nl), &out->peer);
    if (out->peer.family != 0) {
        out->peer.prefix_len = out->local.prefix_len;
    }
    out->flags = rtnl_addr_get_flags(nl);
    out->scope = (uint8_t)rtnl_addr_get_scope(nl);
}

static int cnl_addr_on_reply(struct nl_msg *reply, void *arg) {
    struct cnl_addr_parse *parse = arg;
    int err = nl_msg_parse(reply, cnl_addr_on_object, parse);
    if (err < 0) {
        return cnl_errno_from_nle(err);
    }
    return parse->error;
}

int cnl_addr_list(cnl_context *ctx, int32_t family, int32_t ifindex, struct cnl_address **out, size_t *count) {
    cnl_begin(ctx);
    if (family != 0 && cnl_ip_size(family) == 0) {
        return cnl_fail(ctx, -EAFNOSUPPORT, "family %d is neither 0, AF_INET nor AF_INET6", family);
    }
    struct nl_msg *request = nlmsg_alloc_simple(RTM_GETADDR, NLM_F_DUMP);
    struct ifaddrmsg header = {.ifa_family = (uint8_t)family};
    if (request == NULL || nlmsg_append(request, &header, sizeof(header), NLMSG_ALIGNTO) < 0) {
        nlmsg_free(request);
        return -ENOMEM;
    }
    // `collect` is the first member, so the parse state doubles as cnl_collect_restart's argument.
    struct cnl_addr_parse parse = {
        .collect = {.vec = {.elem_size = sizeof(struct cnl_address)}, .family = family, .ifindex = ifindex},
    };
    int err = cnl_transact(ctx, request, cnl_addr_on_reply, cnl_collect_restart, &parse);
    if (err < 0) {
        cnl_free(parse.collect.vec.items);
        return err;
    }
    return cnl_collect_finish(&parse.collect, out, count);
}
