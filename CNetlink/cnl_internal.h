// Private to CNetlink: the netlink funnel every link, address and route call goes through, and the helpers
// they share. Not part of the module's public header, so libnl types may appear here.

#ifndef CNL_INTERNAL_H
#define CNL_INTERNAL_H

#include "CNetlink.h"

#include <netlink/addr.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>

struct cnl_context {
    struct nl_sock *sock;
    /// The kernel's extended-ACK text for the last failed call, "" otherwise.
    char message[CNL_MESSAGE_SIZE];
};

/// Called for each reply message of a request (the single reply of a get, every part of a dump). Returns 0 or
/// a negative errno; after the first error the rest of the reply is still read, so the socket stays in step,
/// but no longer handed to the callback.
typedef int (*cnl_reply_fn)(struct nl_msg *reply, void *arg);

/// The funnel: sends `request` (which it frees), reads the reply up to the ACK or NLMSG_DONE, and returns 0 or
/// a negative errno: the kernel's own errno when it sent one, else the first callback error, else libnl's
/// failure translated. Dumps (NLM_F_DUMP) are retried as a whole when the kernel reports that the table
/// changed under them; `restart` (may be NULL) is called before each retry so the caller can drop what it
/// collected.
int cnl_transact(cnl_context *ctx, struct nl_msg *request, cnl_reply_fn on_reply, void (*restart)(void *arg),
                 void *arg);

/// libnl's NLE_* code (negative or positive) as a negative errno.
int cnl_errno_from_nle(int nle);

/// Starts a public call on `ctx`: forgets the previous call's message.
void cnl_begin(cnl_context *ctx);

/// Fails a call before anything was sent: stores the reason (printf-style) as the context's message, so a
/// refusal by the shim explains itself as the kernel's do, and returns `err`.
int cnl_fail(cnl_context *ctx, int err, const char *format, ...) __attribute__((format(printf, 3, 4)));

/// Checks family and prefix length; with `require_network`, also that the host bits are zero. `field` names
/// the argument in the message. Returns 0, or -EAFNOSUPPORT / -EINVAL through cnl_fail.
int cnl_ip_check(cnl_context *ctx, const struct cnl_ip *ip, bool require_network, const char *field);

/// 4 or 16 for CNL_AF_INET / CNL_AF_INET6, 0 otherwise.
size_t cnl_ip_size(int32_t family);

/// A new nl_addr for `ip` (already checked), or NULL when out of memory. The caller puts it.
struct nl_addr *cnl_ip_to_nl(const struct cnl_ip *ip);

/// Fills `out` from `addr`; a NULL addr, or one not of AF_INET/AF_INET6, gives family 0.
void cnl_ip_from_nl(const struct nl_addr *addr, struct cnl_ip *out);

/// A growable array of fixed-size elements, handed to the caller as a plain malloc'd block.
struct cnl_vec {
    void *items;
    size_t count;
    size_t capacity;
    size_t elem_size;
};

/// A pointer to a new zeroed element at the end, or NULL when out of memory.
void *cnl_vec_push(struct cnl_vec *vec);

/// What a list call collects, and the filters it applies to the dump (the kernel's own dump filtering needs
/// strict checking turned on, and a dump is small).
struct cnl_collect {
    struct cnl_vec vec;
    /// CNL_AF_INET, CNL_AF_INET6, or 0 for both.
    int32_t family;
    /// A link index, or 0 for all.
    int32_t ifindex;
};

/// Drops what a dump collected so far, keeping the memory, before the dump starts over. A `restart` for
/// cnl_transact whose `arg` is a struct cnl_collect.
void cnl_collect_restart(void *collect);

/// Hands the collected array to the caller: 0 and *out / *count set (*out NULL when empty).
int cnl_collect_finish(struct cnl_collect *collect, void *out, size_t *count);

#endif  // CNL_INTERNAL_H
