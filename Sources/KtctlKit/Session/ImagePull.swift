/// What ktctl says when a cluster cannot pull one of ktconnect's own images (the shadow's or the router's): how to
/// build it and put it where the cluster pulls from.
public enum ImagePull {
    /// The waiting reasons that mean the image will not come.
    public static let failureReasons: Set<String> = ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"]

    /// `image` as ktctl's flag named it; `flag` is that flag (`--image`, `--router-image`); `product` is
    /// `kt-shadow` or `kt-router`.
    public static func advice(image: String, flag: String, product: String, command: String) -> String {
        let tag =
            image.split(separator: "/").last.flatMap { $0.split(separator: ":").dropFirst().first }
            .map(String.init) ?? "latest"
        return """
            Build the image and push it where the cluster pulls from, then name it:
                make images                 (in a ktconnect checkout: writes .build/images/\(product).tar)
                skopeo copy oci-archive:.build/images/\(product).tar docker://REGISTRY/\(product):\(tag)
                ktctl \(command) \(flag) REGISTRY/\(product):\(tag) ...
            A private registry also needs --image-pull-secret NAME; a kind cluster can take the archive as it is \
            (kind load image-archive .build/images/\(product).tar).
            """
    }
}
