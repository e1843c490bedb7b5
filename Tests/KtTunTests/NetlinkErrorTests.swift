import Glibc
import Testing

@testable import KtTun

/// What a user reads when the kernel refuses: what happened, that nothing changed, and what to do.
@Suite struct NetlinkErrorTests {
    @Test func missingTunDevice() {
        let error = NetlinkError(operation: "open TUN device kt0", code: ENOENT)
        #expect(
            error.description == "open TUN device kt0 failed: No such file or directory (ENOENT). Nothing was changed. "
                + "Fix: /dev/net/tun is missing: load the tun module (sudo modprobe tun), or in a container pass "
                + "--device /dev/net/tun.")
    }

    @Test func notRoot() {
        let error = NetlinkError(operation: "add route 10.96.0.0/12 dev kt0 proto ktctl", code: EPERM)
        #expect(error.description.contains("Operation not permitted (EPERM). Nothing was changed."))
        #expect(error.advice?.hasPrefix("this needs root or CAP_NET_ADMIN") == true)
    }

    @Test func nameTakenAndRouteExistsAndKernelWords() {
        #expect(
            NetlinkError(operation: "open TUN device kt0", code: EBUSY).advice?.contains("choose another name") == true)
        let exists = NetlinkError(operation: "add route 10.96.0.0/12 dev kt0", code: EEXIST)
        #expect(exists.advice?.contains("ktctl clean") == true)
        let invalid = NetlinkError(
            operation: "add route 10.96.0.1/12", code: EINVAL,
            kernelMessage: "dst: 10.96.0.1/12 has bits set past the prefix length")
        #expect(
            invalid.description
                == "add route 10.96.0.1/12 failed: Invalid argument (EINVAL): dst: 10.96.0.1/12 has bits set past the "
                + "prefix length. Nothing was changed.")
    }
}
