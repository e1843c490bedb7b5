// Links: list, look up, set MTU and IFF_UP, delete. Requests are built with rtnl_link_*, replies parsed by
// libnl's link parser (nl_msg_parse), and both go through cnl_transact.

#include "cnl_internal.h"

#include <errno.h>
#include <string.h>

#include <linux/if.h>
#include <linux/rtnetlink.h>
#include <netlink/route/link.h>

_Static_assert(CNL_IFF_UP == IFF_UP && CNL_IFF_LOOPBACK == IFF_LOOPBACK && CNL_IFF_POINTOPOINT == IFF_POINTOPOINT
                   && CNL_IFF_RUNNING == IFF_RUNNING && CNL_IFF_NOARP == IFF_NOARP
                   && CNL_IFF_MULTICAST == IFF_MULTICAST && CNL_IFF_LOWER_UP == IFF_LOWER_UP,
               "IFF_*");
_Static_assert(CNL_OPER_UNKNOWN == IF_OPER_UNKNOWN && CNL_OPER_NOTPRESENT == IF_OPER_NOTPRESENT
                   && CNL_OPER_DOWN == IF_OPER_DOWN && CNL_OPER_LOWERLAYERDOWN == IF_OPER_LOWERLAYERDOWN
                   && CNL_OPER_TESTING == IF_OPER_TESTING && CNL_OPER_DORMANT == IF_OPER_DORMANT
                   && CNL_OPER_UP == IF_OPER_UP,
               "IF_OPER_*");

static void cnl_link_from_nl(struct rtnl_link *link, struct cnl_link *out) {
    memset(out, 0, sizeof(*out));
    out->index = rtnl_link_get_ifindex(link);
    const char *name = rtnl_link_get_name(link);
    if (name != NULL) {
        strncpy(out->name, name, sizeof(out->name) - 1);
    }
    out->mtu = rtnl_link_get_mtu(link);
    out->flags = rtnl_link_get_flags(link);
    out->operstate = rtnl_link_get_operstate(link);
    const char *kind = rtnl_link_get_type(link);
    if (kind != NULL) {
        strncpy(out->kind, kind, sizeof(out->kind) - 1);
    }
}

// MARK: - Reading

struct cnl_link_parse {
    /// Where the next link goes: one struct for a get, a push onto `collect` for a list.
    struct cnl_link *single;
    struct cnl_collect *collect;
    bool found;
    int error;
};

static void cnl_link_on_object(struct nl_object *object, void *arg) {
    struct cnl_link_parse *parse = arg;
    if (nl_object_get_msgtype(object) != RTM_NEWLINK) {
        return;
    }
    struct cnl_link *slot = parse->single;
    if (slot == NULL) {
        slot = cnl_vec_push(&parse->collect->vec);
        if (slot == NULL) {
            parse->error = -ENOMEM;
            return;
        }
    }
    cnl_link_from_nl((struct rtnl_link *)object, slot);
    parse->found = true;
}

static int cnl_link_on_reply(struct nl_msg *reply, void *arg) {
    struct cnl_link_parse *parse = arg;
    int err = nl_msg_parse(reply, cnl_link_on_object, parse);
    if (err < 0) {
        return cnl_errno_from_nle(err);
    }
    return parse->error;
}

static void cnl_link_restart(void *arg) {
    cnl_collect_restart(((struct cnl_link_parse *)arg)->collect);
}

int cnl_link_list(cnl_context *ctx, struct cnl_link **out, size_t *count) {
    cnl_begin(ctx);
    struct nl_msg *request = nlmsg_alloc_simple(RTM_GETLINK, NLM_F_DUMP);
    struct ifinfomsg header = {.ifi_family = AF_UNSPEC};
    if (request == NULL || nlmsg_append(request, &header, sizeof(header), NLMSG_ALIGNTO) < 0) {
        nlmsg_free(request);
        return -ENOMEM;
    }
    struct cnl_collect collect = {.vec = {.elem_size = sizeof(struct cnl_link)}};
    struct cnl_link_parse parse = {.collect = &collect};
    int err = cnl_transact(ctx, request, cnl_link_on_reply, cnl_link_restart, &parse);
    if (err < 0) {
        cnl_free(collect.vec.items);
        return err;
    }
    return cnl_collect_finish(&collect, out, count);
}

/// RTM_GETLINK for one link; the kernel answers ENODEV when there is none.
static int cnl_link_get(cnl_context *ctx, int32_t index, const char *name, struct cnl_link *out) {
    struct nl_msg *request = NULL;
    int err = rtnl_link_build_get_request(index, name, &request);
    if (err < 0) {
        return cnl_errno_from_nle(err);
    }
    struct cnl_link found;
    struct cnl_link_parse parse = {.single = &found};
    err = cnl_transact(ctx, request, cnl_link_on_reply, NULL, &parse);
    if (err < 0) {
        return err;
    }
    if (!parse.found) {
        return -ENODEV;
    }
    *out = found;
    return 0;
}

int cnl_link_get_by_name(cnl_context *ctx, const char *name, struct cnl_link *out) {
    cnl_begin(ctx);
    size_t length = strlen(name);
    if (length == 0 || length >= CNL_IFNAMSIZ) {
        return cnl_fail(ctx, -EINVAL, "name: %zu bytes, not 1...%d", length, CNL_IFNAMSIZ - 1);
    }
    return cnl_link_get(ctx, 0, name, out);
}

int cnl_link_get_by_index(cnl_context *ctx, int32_t index, struct cnl_link *out) {
    cnl_begin(ctx);
    if (index <= 0) {
        return cnl_fail(ctx, -EINVAL, "index %d is not a link index", index);
    }
    return cnl_link_get(ctx, index, NULL, out);
}

// MARK: - Changing

/// Sends one RTM_NEWLINK for the link `index` with `changes` (rtnl_link_build_change_request fills in only
/// what `changes` has set, and with IFF_* bits only those in its flag mask).
static int cnl_link_change(cnl_context *ctx, int32_t index, struct rtnl_link *changes) {
    if (index <= 0) {
        return cnl_fail(ctx, -EINVAL, "index %d is not a link index", index);
    }
    struct rtnl_link *orig = rtnl_link_alloc();
    if (orig == NULL) {
        return -ENOMEM;
    }
    rtnl_link_set_ifindex(orig, index);
    struct nl_msg *request = NULL;
    int err = rtnl_link_build_change_request(orig, changes, 0, &request);
    rtnl_link_put(orig);
    if (err < 0) {
        return cnl_errno_from_nle(err);
    }
    return cnl_transact(ctx, request, NULL, NULL, NULL);
}

int cnl_link_set_mtu(cnl_context *ctx, int32_t index, uint32_t mtu) {
    cnl_begin(ctx);
    struct rtnl_link *changes = rtnl_link_alloc();
    if (changes == NULL) {
        return -ENOMEM;
    }
    rtnl_link_set_mtu(changes, mtu);
    int err = cnl_link_change(ctx, index, changes);
    rtnl_link_put(changes);
    return err;
}

int cnl_link_set_up(cnl_context *ctx, int32_t index, bool up) {
    cnl_begin(ctx);
    struct rtnl_link *changes = rtnl_link_alloc();
    if (changes == NULL) {
        return -ENOMEM;
    }
    if (up) {
        rtnl_link_set_flags(changes, IFF_UP);
    } else {
        rtnl_link_unset_flags(changes, IFF_UP);
    }
    int err = cnl_link_change(ctx, index, changes);
    rtnl_link_put(changes);
    return err;
}

int cnl_link_delete(cnl_context *ctx, int32_t index) {
    cnl_begin(ctx);
    if (index <= 0) {
        return cnl_fail(ctx, -EINVAL, "index %d is not a link index", index);
    }
    struct rtnl_link *link = rtnl_link_alloc();
    if (link == NULL) {
        return -ENOMEM;
    }
    rtnl_link_set_ifindex(link, index);
    struct nl_msg *request = NULL;
    int err = rtnl_link_build_delete_request(link, &request);
    rtnl_link_put(link);
    if (err < 0) {
        return cnl_errno_from_nle(err);
    }
    return cnl_transact(ctx, request, NULL, NULL, NULL);
}
