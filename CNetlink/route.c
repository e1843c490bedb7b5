// Routes: add, replace, delete, list (all tables, both families) and the kernel's answer to "route get", with
// rtnl_route_* and cnl_transact.

#include "cnl_internal.h"

#include <errno.h>
#include <string.h>

#include <linux/rtnetlink.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>

_Static_assert(CNL_RTN_UNSPEC == RTN_UNSPEC && CNL_RTN_UNICAST == RTN_UNICAST && CNL_RTN_LOCAL == RTN_LOCAL
                   && CNL_RTN_BROADCAST == RTN_BROADCAST && CNL_RTN_ANYCAST == RTN_ANYCAST
                   && CNL_RTN_MULTICAST == RTN_MULTICAST && CNL_RTN_BLACKHOLE == RTN_BLACKHOLE
                   && CNL_RTN_UNREACHABLE == RTN_UNREACHABLE && CNL_RTN_PROHIBIT == RTN_PROHIBIT
                   && CNL_RTN_THROW == RTN_THROW,
               "RTN_*");
_Static_assert(CNL_RT_SCOPE_UNIVERSE == RT_SCOPE_UNIVERSE && CNL_RT_SCOPE_SITE == RT_SCOPE_SITE
                   && CNL_RT_SCOPE_LINK == RT_SCOPE_LINK && CNL_RT_SCOPE_HOST == RT_SCOPE_HOST
                   && CNL_RT_SCOPE_AUTO == RT_SCOPE_NOWHERE,
               "RT_SCOPE_*");
_Static_assert(CNL_RT_TABLE_DEFAULT == RT_TABLE_DEFAULT && CNL_RT_TABLE_MAIN == RT_TABLE_MAIN
                   && CNL_RT_TABLE_LOCAL == RT_TABLE_LOCAL,
               "RT_TABLE_*");
_Static_assert(CNL_RTPROT_UNSPEC == RTPROT_UNSPEC && CNL_RTPROT_KERNEL == RTPROT_KERNEL
                   && CNL_RTPROT_BOOT == RTPROT_BOOT && CNL_RTPROT_STATIC == RTPROT_STATIC,
               "RTPROT_*");
// The tag must stay clear of every protocol number the kernel's header names.
_Static_assert(CNL_RTPROT_KTCTL > RTPROT_STATIC && CNL_RTPROT_KTCTL != RTPROT_GATED && CNL_RTPROT_KTCTL != RTPROT_RA
                   && CNL_RTPROT_KTCTL != RTPROT_MRT && CNL_RTPROT_KTCTL != RTPROT_ZEBRA
                   && CNL_RTPROT_KTCTL != RTPROT_BIRD && CNL_RTPROT_KTCTL != RTPROT_DNROUTED
                   && CNL_RTPROT_KTCTL != RTPROT_XORP && CNL_RTPROT_KTCTL != RTPROT_NTK
                   && CNL_RTPROT_KTCTL != RTPROT_DHCP && CNL_RTPROT_KTCTL != RTPROT_MROUTED
                   && CNL_RTPROT_KTCTL != RTPROT_KEEPALIVED && CNL_RTPROT_KTCTL != RTPROT_BABEL
                   && CNL_RTPROT_KTCTL != RTPROT_OPENR && CNL_RTPROT_KTCTL != RTPROT_BGP
                   && CNL_RTPROT_KTCTL != RTPROT_ISIS && CNL_RTPROT_KTCTL != RTPROT_OSPF
                   && CNL_RTPROT_KTCTL != RTPROT_RIP && CNL_RTPROT_KTCTL != RTPROT_EIGRP,
               "CNL_RTPROT_KTCTL collides with a kernel RTPROT_*");

enum cnl_route_op { CNL_ROUTE_ADD, CNL_ROUTE_REPLACE, CNL_ROUTE_DELETE };

/// The scope `ip route add` picks when not told (iproute2's iproute_modify), so routes added here look the
/// same as the ones an administrator adds by hand.
static uint8_t cnl_route_default_scope(const struct cnl_route *route, uint8_t type) {
    switch (type) {
    case RTN_LOCAL:
    case RTN_NAT:
        return RT_SCOPE_HOST;
    case RTN_BROADCAST:
    case RTN_MULTICAST:
    case RTN_ANYCAST:
        return RT_SCOPE_LINK;
    case RTN_UNICAST:
        return route->gateway.family != 0 ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    default:
        return RT_SCOPE_UNIVERSE;
    }
}

/// An rtnl_route for `route` as `op` needs it, after checking it, in `*out`. Returns 0 or a negative errno.
static int cnl_route_to_nl(cnl_context *ctx, const struct cnl_route *route, enum cnl_route_op op,
                           struct rtnl_route **out) {
    int err = cnl_ip_check(ctx, &route->dst, true, "dst");
    if (err < 0) {
        return err;
    }
    int32_t family = route->dst.family;
    if (route->gateway.family != 0) {
        if (route->gateway.family != family) {
            return cnl_fail(ctx, -EINVAL, "gateway: family %d differs from the destination's", route->gateway.family);
        }
        if ((err = cnl_ip_check(ctx, &route->gateway, false, "gateway")) < 0) {
            return err;
        }
    }
    if (route->prefsrc.family != 0) {
        if (route->prefsrc.family != family) {
            return cnl_fail(ctx, -EINVAL, "prefsrc: family %d differs from the destination's", route->prefsrc.family);
        }
        if ((err = cnl_ip_check(ctx, &route->prefsrc, false, "prefsrc")) < 0) {
            return err;
        }
    }
    if (route->oif < 0) {
        return cnl_fail(ctx, -EINVAL, "oif %d is not a link index", route->oif);
    }
    // libnl's rtnl_route_set_type would refuse it and leave the type at unicast, adding a route nobody asked for.
    if (route->type > RTN_MAX) {
        return cnl_fail(ctx, -EINVAL, "type %u is not a route type (RTN_*)", route->type);
    }

    struct rtnl_route *nl = rtnl_route_alloc();
    struct nl_addr *dst = cnl_ip_to_nl(&route->dst);
    struct nl_addr *gateway = NULL;
    struct nl_addr *prefsrc = NULL;
    if (nl == NULL || dst == NULL) {
        err = -ENOMEM;
        goto out;
    }
    rtnl_route_set_family(nl, (uint8_t)family);
    if ((err = rtnl_route_set_dst(nl, dst)) < 0) {
        err = cnl_errno_from_nle(err);
        goto out;
    }
    rtnl_route_set_table(nl, route->table != 0 ? route->table : RT_TABLE_MAIN);
    if (op == CNL_ROUTE_DELETE) {
        // rtnl_route_alloc defaults (static, unicast, guessed scope) would narrow the match; 0 and NOWHERE are
        // the kernel's wildcards.
        rtnl_route_set_protocol(nl, route->protocol);
        err = rtnl_route_set_type(nl, route->type);
        rtnl_route_set_scope(nl, route->scope);
    } else {
        uint8_t type = route->type != 0 ? route->type : RTN_UNICAST;
        rtnl_route_set_protocol(nl, route->protocol != 0 ? route->protocol : RTPROT_BOOT);
        err = rtnl_route_set_type(nl, type);
        rtnl_route_set_scope(nl, route->scope != RT_SCOPE_NOWHERE ? route->scope
                                                                  : cnl_route_default_scope(route, type));
    }
    if (err < 0) {
        err = cnl_errno_from_nle(err);
        goto out;
    }
    if (route->metric != 0) {
        rtnl_route_set_priority(nl, route->metric);
    }
    if (route->prefsrc.family != 0) {
        if ((prefsrc = cnl_ip_to_nl(&route->prefsrc)) == NULL) {
            err = -ENOMEM;
            goto out;
        }
        if ((err = rtnl_route_set_pref_src(nl, prefsrc)) < 0) {
            err = cnl_errno_from_nle(err);
            goto out;
        }
    }
    if (route->oif != 0 || route->gateway.family != 0) {
        struct rtnl_nexthop *nexthop = rtnl_route_nh_alloc();
        if (nexthop == NULL) {
            err = -ENOMEM;
            goto out;
        }
        if (route->oif != 0) {
            rtnl_route_nh_set_ifindex(nexthop, route->oif);
        }
        if (route->gateway.family != 0) {
            if ((gateway = cnl_ip_to_nl(&route->gateway)) == NULL) {
                rtnl_route_nh_free(nexthop);
                err = -ENOMEM;
                goto out;
            }
            rtnl_route_nh_set_gateway(nexthop, gateway);
        }
        // The route owns the nexthop from here on.
        rtnl_route_add_nexthop(nl, nexthop);
    }
    *out = nl;
    nl = NULL;
    err = 0;
out:
    nl_addr_put(dst);
    nl_addr_put(gateway);
    nl_addr_put(prefsrc);
    if (nl != NULL) {
        rtnl_route_put(nl);
    }
    return err;
}

static int cnl_route_modify(cnl_context *ctx, const struct cnl_route *route, enum cnl_route_op op) {
    cnl_begin(ctx);
    struct rtnl_route *nl = NULL;
    int err = cnl_route_to_nl(ctx, route, op, &nl);
    if (err < 0) {
        return err;
    }
    struct nl_msg *request = NULL;
    switch (op) {
    case CNL_ROUTE_ADD:
        // NLM_F_EXCL: an existing route is an error (EEXIST), never silently kept or changed.
        err = rtnl_route_build_add_request(nl, NLM_F_EXCL, &request);
        break;
    case CNL_ROUTE_REPLACE:
        err = rtnl_route_build_add_request(nl, NLM_F_REPLACE, &request);
        break;
    case CNL_ROUTE_DELETE:
        err = rtnl_route_build_del_request(nl, 0, &request);
        break;
    }
    rtnl_route_put(nl);
    if (err < 0) {
        return cnl_errno_from_nle(err);
    }
    return cnl_transact(ctx, request, NULL, NULL, NULL);
}

int cnl_route_add(cnl_context *ctx, const struct cnl_route *route) {
    return cnl_route_modify(ctx, route, CNL_ROUTE_ADD);
}

int cnl_route_replace(cnl_context *ctx, const struct cnl_route *route) {
    return cnl_route_modify(ctx, route, CNL_ROUTE_REPLACE);
}

int cnl_route_delete(cnl_context *ctx, const struct cnl_route *route) {
    return cnl_route_modify(ctx, route, CNL_ROUTE_DELETE);
}

// MARK: - Reading

static void cnl_route_from_nl(struct rtnl_route *nl, struct cnl_route *out) {
    memset(out, 0, sizeof(*out));
    cnl_ip_from_nl(rtnl_route_get_dst(nl), &out->dst);
    // A default route has no RTA_DST, so its nl_addr may carry no family of its own.
    out->dst.family = rtnl_route_get_family(nl);
    cnl_ip_from_nl(rtnl_route_get_pref_src(nl), &out->prefsrc);
    out->metric = rtnl_route_get_priority(nl);
    out->table = rtnl_route_get_table(nl);
    out->protocol = rtnl_route_get_protocol(nl);
    out->scope = rtnl_route_get_scope(nl);
    out->type = rtnl_route_get_type(nl);
    out->nexthops = (uint32_t)rtnl_route_get_nnexthops(nl);
    if (out->nexthops > 0) {
        struct rtnl_nexthop *first = rtnl_route_nexthop_n(nl, 0);
        out->oif = rtnl_route_nh_get_ifindex(first);
        cnl_ip_from_nl(rtnl_route_nh_get_gateway(first), &out->gateway);
        if (out->gateway.family != out->dst.family) {
            // An IPv4 route through an IPv6 next hop (RTA_VIA) is outside this struct; report no gateway
            // rather than a wrong one.
            memset(&out->gateway, 0, sizeof(out->gateway));
        }
    }
}

/// Parse state for lists.
struct cnl_route_parse {
    struct cnl_collect collect;
    /// Routes of the family dumped before this one, which a retried dump must keep.
    size_t kept;
};

static void cnl_route_restart(void *arg) {
    struct cnl_route_parse *parse = arg;
    parse->collect.vec.count = parse->kept;
}

static int cnl_route_on_list_reply(struct nl_msg *reply, void *arg) {
    struct cnl_route_parse *parse = arg;
    struct nlmsghdr *hdr = nlmsg_hdr(reply);
    if (hdr->nlmsg_type != RTM_NEWROUTE) {
        return 0;
    }
    struct rtnl_route *nl = NULL;
    int err = rtnl_route_parse(hdr, &nl);
    if (err < 0) {
        return cnl_errno_from_nle(err);
    }
    int family = rtnl_route_get_family(nl);
    // Dumps of one family hold only that family, but an IPv6 dump may carry cached clones (exceptions) that
    // are not routes anyone installed.
    if (family == parse->collect.family && !(rtnl_route_get_flags(nl) & RTM_F_CLONED)) {
        struct cnl_route *out = cnl_vec_push(&parse->collect.vec);
        if (out == NULL) {
            rtnl_route_put(nl);
            return -ENOMEM;
        }
        cnl_route_from_nl(nl, out);
    }
    rtnl_route_put(nl);
    return 0;
}

/// Appends one family's routes, all tables, to `parse`.
static int cnl_route_dump(cnl_context *ctx, int32_t family, struct cnl_route_parse *parse) {
    struct nl_msg *request = nlmsg_alloc_simple(RTM_GETROUTE, NLM_F_DUMP);
    // rtm_table 0 (RT_TABLE_UNSPEC): every table, not only main.
    struct rtmsg header = {.rtm_family = (uint8_t)family, .rtm_table = RT_TABLE_UNSPEC};
    if (request == NULL || nlmsg_append(request, &header, sizeof(header), NLMSG_ALIGNTO) < 0) {
        nlmsg_free(request);
        return -ENOMEM;
    }
    parse->collect.family = family;
    parse->kept = parse->collect.vec.count;
    return cnl_transact(ctx, request, cnl_route_on_list_reply, cnl_route_restart, parse);
}

int cnl_route_list(cnl_context *ctx, int32_t family, struct cnl_route **out, size_t *count) {
    cnl_begin(ctx);
    if (family != 0 && cnl_ip_size(family) == 0) {
        return cnl_fail(ctx, -EAFNOSUPPORT, "family %d is neither 0, AF_INET nor AF_INET6", family);
    }
    struct cnl_route_parse parse = {.collect = {.vec = {.elem_size = sizeof(struct cnl_route)}}};
    int err = 0;
    if (family == 0 || family == CNL_AF_INET) {
        err = cnl_route_dump(ctx, CNL_AF_INET, &parse);
    }
    if (err == 0 && (family == 0 || family == CNL_AF_INET6)) {
        err = cnl_route_dump(ctx, CNL_AF_INET6, &parse);
    }
    if (err < 0) {
        cnl_free(parse.collect.vec.items);
        return err;
    }
    return cnl_collect_finish(&parse.collect, out, count);
}

// MARK: - Route get

struct cnl_route_get_parse {
    struct cnl_route route;
    bool found;
};

static int cnl_route_on_get_reply(struct nl_msg *reply, void *arg) {
    struct cnl_route_get_parse *parse = arg;
    struct nlmsghdr *hdr = nlmsg_hdr(reply);
    if (hdr->nlmsg_type != RTM_NEWROUTE) {
        return 0;
    }
    struct rtnl_route *nl = NULL;
    int err = rtnl_route_parse(hdr, &nl);
    if (err < 0) {
        return cnl_errno_from_nle(err);
    }
    cnl_route_from_nl(nl, &parse->route);
    parse->found = true;
    rtnl_route_put(nl);
    return 0;
}

/// One RTM_GETROUTE for the address `dst` with `flags` in rtm_flags.
static int cnl_route_get_once(cnl_context *ctx, const struct cnl_ip *dst, uint32_t flags,
                              struct cnl_route_get_parse *parse) {
    size_t size = cnl_ip_size(dst->family);
    struct rtmsg header = {
        .rtm_family = (uint8_t)dst->family,
        .rtm_dst_len = (uint8_t)(size * 8),
        .rtm_flags = flags,
    };
    struct nl_msg *request = nlmsg_alloc_simple(RTM_GETROUTE, 0);
    if (request == NULL || nlmsg_append(request, &header, sizeof(header), NLMSG_ALIGNTO) < 0
        || nla_put(request, RTA_DST, (int)size, dst->bytes) < 0) {
        nlmsg_free(request);
        return -ENOMEM;
    }
    int err = cnl_transact(ctx, request, cnl_route_on_get_reply, NULL, parse);
    if (err == 0 && !parse->found) {
        return -EPROTO;
    }
    return err;
}

int cnl_route_get(cnl_context *ctx, const struct cnl_ip *dst, struct cnl_route *out) {
    cnl_begin(ctx);
    if (cnl_ip_size(dst->family) == 0) {
        return cnl_fail(ctx, -EAFNOSUPPORT, "dst: family %d is neither AF_INET nor AF_INET6", dst->family);
    }
    // First the path a packet would take: device, gateway, the source address the kernel would choose, and
    // (RTM_F_LOOKUP_TABLE) the table whose route was used instead of always "main".
    struct cnl_route_get_parse path = {0};
    int err = cnl_route_get_once(ctx, dst, RTM_F_LOOKUP_TABLE, &path);
    if (err < 0) {
        return err;
    }
    struct cnl_route result = path.route;
    // Then the route that matched (RTM_F_FIB_MATCH, Linux 4.13): its prefix, metric, protocol, scope and type,
    // which the first answer reports for a host route of its own making. If this fails, the first answer
    // still stands, with the destination as a host prefix.
    struct cnl_route_get_parse match = {0};
    if (cnl_route_get_once(ctx, dst, RTM_F_FIB_MATCH | RTM_F_LOOKUP_TABLE, &match) == 0) {
        result.dst = match.route.dst;
        result.metric = match.route.metric;
        result.protocol = match.route.protocol;
        result.scope = match.route.scope;
        result.type = match.route.type;
        result.nexthops = match.route.nexthops;
    } else {
        result.dst = *dst;
        result.dst.prefix_len = (uint8_t)(cnl_ip_size(dst->family) * 8);
    }
    // The message of a failed FIB match must not be taken for the whole call's.
    ctx->message[0] = '\0';
    *out = result;
    return 0;
}
