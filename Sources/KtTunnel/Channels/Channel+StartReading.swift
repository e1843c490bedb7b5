import NIOCore

extension Channel {
    /// Turns `autoRead` on and asks for the first read. An SSH child channel, unlike a socket, does not read when
    /// `autoRead` is switched on, so bytes that arrived while it was off would wait for a read nobody asks for.
    public func startReading() -> EventLoopFuture<Void> {
        setOption(ChannelOptions.autoRead, value: true).map { self.read() }
    }
}
