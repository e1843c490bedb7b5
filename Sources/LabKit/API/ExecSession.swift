import Foundation
import Glibc
import KubeKit
import NIOCore
import NIOWebSocket

/// Where and how an exec runs: the pod's network namespace, the container's directory and environment.
public struct ExecTarget: Sendable {
    public var networkNamespace: String
    public var workingDirectory: String
    public var environment: [String: String]
    /// For a container that runs under an OCI runtime: the argv that runs a command inside it (`crun exec …`),
    /// which then carries the container's user, groups, capabilities, directory and environment itself.
    public var runtimeExec: (@Sendable ([String]) throws -> [String])?

    public init(
        networkNamespace: String, workingDirectory: String, environment: [String: String],
        runtimeExec: (@Sendable ([String]) throws -> [String])? = nil
    ) {
        self.networkNamespace = networkNamespace
        self.workingDirectory = workingDirectory
        self.environment = environment
        self.runtimeExec = runtimeExec
    }
}

/// `kubectl exec` over WebSocket (`v5.channel.k8s.io`, or `v4.channel.k8s.io` for older clients): the command runs
/// as a process in the pod's namespace; channel 0 is its stdin (v5: `[255, 0]` closes it), 1 and 2 its stdout and
/// stderr, 3 the final Status (`NonZeroExitCode` with the code as the cause's message), then a normal close.
public final class ExecSession: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    public typealias InboundIn = WebSocketFrame
    public typealias OutboundOut = WebSocketFrame

    let command: [String]
    let target: ExecTarget
    let wantsStdin: Bool
    let version5: Bool
    private var process: Process?
    private var stdin: FileHandle?
    private var context: ChannelHandlerContext?
    private var finished = false

    public init(command: [String], target: ExecTarget, stdin: Bool, version5: Bool) {
        self.command = command
        self.target = target
        self.wantsStdin = stdin
        self.version5 = version5
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let process = Process()
        if let runtimeExec = target.runtimeExec, let argv = try? runtimeExec(command), let executable = argv.first {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = Array(argv.dropFirst())
        } else {
            process.executableURL = URL(fileURLWithPath: Host.findExecutable("ip") ?? "/usr/sbin/ip")
            process.arguments = ["netns", "exec", target.networkNamespace] + command
            process.environment = target.environment
            process.currentDirectoryURL = URL(fileURLWithPath: target.workingDirectory)
        }
        let output = Pipe()
        let errors = Pipe()
        let input = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = wantsStdin ? input : FileHandle.nullDevice
        let eventLoop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let group = DispatchGroup()
        for (pipe, channel) in [(output, UInt8(1)), (errors, UInt8(2))] {
            group.enter()
            let handle = pipe.fileHandleForReading
            Thread {
                while true {
                    let data = handle.availableData
                    if data.isEmpty { break }
                    let bytes = Array(data)
                    eventLoop.execute { bound.value.send(channel, bytes) }
                }
                group.leave()
            }.start()
        }
        process.terminationHandler = { finished in
            // All output first, then the status.
            group.notify(queue: .global()) {
                let status = finished.terminationStatus
                eventLoop.execute { bound.value.finish(exitCode: status) }
            }
        }
        do {
            try Host.launch(process)
        } catch {
            send(2, Array("cannot run \(command.first ?? ""): \(error)\n".utf8))
            finish(exitCode: 126)
            return
        }
        self.process = process
        if wantsStdin { stdin = input.fileHandleForWriting }
    }

    func send(_ channel: UInt8, _ bytes: [UInt8]) {
        guard let context, !finished else { return }
        var buffer = context.channel.allocator.buffer(capacity: bytes.count + 1)
        buffer.writeInteger(channel)
        buffer.writeBytes(bytes)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: buffer)), promise: nil)
    }

    func finish(exitCode: Int32) {
        guard let context, !finished else { return }
        let status: JSONValue =
            exitCode == 0
            ? ["metadata": [:], "status": "Success"]
            : [
                "metadata": [:], "status": "Failure", "reason": "NonZeroExitCode",
                "message": .string(
                    "command terminated with non-zero exit code: error executing command \(command), exit code \(exitCode)"
                ),
                "details": ["causes": [["reason": "ExitCode", "message": .string(String(exitCode))]]],
            ]
        send(3, Array((try? status.jsonData()) ?? Data()))
        finished = true
        var code = context.channel.allocator.buffer(capacity: 2)
        code.write(webSocketErrorCode: .normalClosure)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: code)))
            .whenComplete { _ in
                channel.close(promise: nil)
            }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        var payload = frame.data
        if let key = frame.maskKey { WebSocketMasking.apply(key, to: &payload) }
        switch frame.opcode {
        case .binary:
            guard let channel = payload.readInteger(as: UInt8.self) else { return }
            if channel == 0, let bytes = payload.readBytes(length: payload.readableBytes), !bytes.isEmpty {
                try? stdin?.write(contentsOf: bytes)
            } else if channel == 255, version5, payload.readInteger(as: UInt8.self) == 0 {
                try? stdin?.close()
                stdin = nil
            }
        case .ping:
            context.writeAndFlush(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: payload)), promise: nil)
        case .connectionClose:
            if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
            context.close(promise: nil)
        default:
            break
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? stdin?.close()
        self.context = nil
        context.fireChannelInactive()
    }
}
