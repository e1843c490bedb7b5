// libnl from Debian (libnl-3-dev, libnl-route-3-dev), found through pkg-config. Only CNetlink's C files use it;
// Swift code talks to the kernel through CNetlink's plain-C header instead.
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/addr.h>
#include <netlink/route/route.h>
