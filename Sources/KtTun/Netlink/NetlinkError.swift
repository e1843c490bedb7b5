import Glibc

/// A failure of a netlink or TUN operation: which operation, the kernel's errno, and its own words if it gave any.
///
/// The description says what happened, that nothing was changed (CNetlink changes nothing when it fails), and
/// what to do next for the errors a user can act on.
public struct NetlinkError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What we were doing, for people: `"add route 10.96.0.0/12 dev kt0"`.
    public var operation: String
    /// The errno, positive.
    public var code: Int32
    /// The kernel's extended-ACK text, or CNetlink's reason for refusing an argument; may be empty.
    public var kernelMessage: String

    public init(operation: String, code: Int32, kernelMessage: String = "") {
        self.operation = operation
        self.code = code
        self.kernelMessage = kernelMessage
    }

    /// The C library's name for the errno (`EPERM`).
    public var codeName: String {
        switch code {
        case EPERM: return "EPERM"
        case ENOENT: return "ENOENT"
        case EACCES: return "EACCES"
        case EBUSY: return "EBUSY"
        case EEXIST: return "EEXIST"
        case ENODEV: return "ENODEV"
        case EINVAL: return "EINVAL"
        case ESRCH: return "ESRCH"
        case EADDRNOTAVAIL: return "EADDRNOTAVAIL"
        case ENETUNREACH: return "ENETUNREACH"
        case EHOSTUNREACH: return "EHOSTUNREACH"
        case EAFNOSUPPORT: return "EAFNOSUPPORT"
        case EOPNOTSUPP: return "EOPNOTSUPP"
        case EINTR: return "EINTR"
        default: return "errno \(code)"
        }
    }

    /// What the user can do about it, where there is something.
    public var advice: String? {
        switch code {
        case EPERM:
            return "this needs root or CAP_NET_ADMIN: run it with sudo, or grant the capability "
                + "(sudo setcap cap_net_admin+ep $(command -v ktctl))"
        case ENOENT where operation.hasPrefix("open TUN"):
            return "/dev/net/tun is missing: load the tun module (sudo modprobe tun), or in a container pass "
                + "--device /dev/net/tun"
        case EACCES where operation.hasPrefix("open TUN"):
            return "/dev/net/tun is not readable and writable for this user: run with sudo"
        case EBUSY where operation.hasPrefix("open TUN"):
            return "an interface with that name exists: choose another name, or remove it if a crashed session "
                + "left it (ktctl clean)"
        case EEXIST:
            return "it already exists: `ktctl route` lists the routes, and `ktctl clean` removes a crashed session's"
        default:
            return nil
        }
    }

    public var description: String {
        var text = "\(operation) failed: \(String(cString: strerror(code))) (\(codeName))"
        if !kernelMessage.isEmpty { text += ": \(kernelMessage)" }
        text += ". Nothing was changed."
        if let advice { text += " Fix: \(advice)." }
        return text
    }
}
