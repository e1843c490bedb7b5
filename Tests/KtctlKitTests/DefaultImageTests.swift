import Foundation
import KtctlKit
import NamespaceTestSupport
import Testing

/// ktctl's default images are the ones `make images` writes, and a pull failure says how to make them.
@Suite struct DefaultImageTests {
    @Test func defaultsAreWhatMakeImagesBuilds() throws {
        let makefile = try String(contentsOfFile: "\(repositoryRoot)/Makefile", encoding: .utf8)
        let tag = try #require(
            makefile.split(separator: "\n").first { $0.hasPrefix("IMAGE_TAG := ") }?.dropFirst("IMAGE_TAG := ".count))
        #expect(ClusterOptions.defaultImage == "kt-shadow:\(tag)")
        #expect(MeshOptions.defaultRouterImage == "kt-router:\(tag)")
        #expect(ClusterOptions().image == ClusterOptions.defaultImage)
    }

    @Test func aPullFailureSaysHowToBuildAndPush() {
        let advice = ImagePull.advice(
            image: "kt-shadow:0.1.0", flag: "--image", product: "kt-shadow", command: "connect")
        #expect(advice.contains("make images"))
        #expect(
            advice.contains("skopeo copy oci-archive:.build/images/kt-shadow.tar docker://REGISTRY/kt-shadow:0.1.0"))
        #expect(advice.contains("ktctl connect --image REGISTRY/kt-shadow:0.1.0"))
        let router = ImagePull.advice(
            image: "registry.local:5000/kt-router:7", flag: "--router-image", product: "kt-router", command: "mesh")
        #expect(router.contains("docker://REGISTRY/kt-router:7") && router.contains("ktctl mesh --router-image"))
    }
}
