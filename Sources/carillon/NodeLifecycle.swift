import CarillonServiceNode
import CarillonMetricsEndpoint
import Dispatch
import Foundation
import Synchronization

/// Something `carillon node` runs beside its member for the life of the
/// process: the metrics endpoint now, the local client endpoint for the lock
/// and key-value services later.
///
/// The order, in `Node.run`: a service is started after the member is
/// created and before it joins the bus (so one that cannot start — its port
/// is taken — ends the node before the cluster ever sees it), and stopped at
/// shutdown after the member has drained (and left, with --leave) and before
/// the member stops, services in the reverse order of their start.
protocol NodeService: AnyObject {
    /// For the log: "metrics endpoint on 127.0.0.1:9464".
    var name: String { get }
    /// Stops the service and releases what it holds; called once.
    func stop()
}

/// The services started so far.
final class NodeServices {
    private var running: [any NodeService] = []

    /// Records a started service (to be stopped by ``stopAll()``).
    func add(_ service: any NodeService) { running.append(service) }

    /// Stops every service, the last started first. Idempotent, so it can
    /// also sit in a `defer` for the error paths.
    func stopAll() {
        while let service = running.popLast() { service.stop() }
    }
}

/// `GET /metrics` for the member: a ``PrometheusExport`` served by a ``MetricsResponder``.
final class MetricsService: NodeService {
    let responder: MetricsResponder
    var name: String { "metrics endpoint on http://\(responder.address)/metrics" }

    init(responder: MetricsResponder) { self.responder = responder }

    func stop() { responder.stop() }
}

/// The services (locks, objects) and their local client socket.
final class ServicesEndpointService: NodeService {
    let endpoint: ClientEndpoint
    let node: ServiceNode
    var name: String { "services (locks, objects) for local clients on \(endpoint.path)" }

    init(endpoint: ClientEndpoint, node: ServiceNode) {
        self.endpoint = endpoint
        self.node = node
    }

    func stop() {
        endpoint.stop()
        node.stop()
    }
}

/// SIGINT and SIGTERM end the node gracefully the first time and at once the
/// second; SIGHUP is logged and ignored.
///
/// The signals are set to SIG_IGN and watched by dispatch sources, so the
/// handlers run on a dispatch queue, not in signal context: the first stop
/// request sets ``stopRequested`` and signals `wake` (the run loop's
/// semaphore); a second one, while the node drains, writes a line and calls
/// `_exit` — no drain, no log flush, no leave — with status 128 + the signal
/// (130 for SIGINT, 143 for SIGTERM), as a shell reports a process a signal
/// ended.
final class ShutdownSignals: @unchecked Sendable {
    private let received = Atomic<Int>(0)
    /// Made in init, cancelled once by ``cancel()`` (the run's thread).
    private var sources: [any DispatchSourceSignal] = []

    /// Whether SIGINT or SIGTERM has arrived.
    var stopRequested: Bool { received.load(ordering: .acquiring) > 0 }

    /// Installs the handlers. `name` starts each log line ("a (node 0)");
    /// `drain` says what a graceful stop waits for.
    init(name: String, drain: String, wake: DispatchSemaphore) {
        for number in [SIGINT, SIGTERM, SIGHUP] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            let signalName = number == SIGINT ? "SIGINT" : number == SIGTERM ? "SIGTERM" : "SIGHUP"
            source.setEventHandler { [self] in
                if number == SIGHUP {
                    Self.log("\(name): SIGHUP ignored (the configuration is read only at start: restart the member to change it)")
                    return
                }
                if received.add(1, ordering: .acquiringAndReleasing).newValue == 1 {
                    Self.log("\(name): \(signalName): stopping — \(drain); send SIGINT or SIGTERM again to exit at once")
                    wake.signal()
                } else {
                    Self.log(
                        "\(name): \(signalName) again while stopping: exiting at once (status \(128 + number)) without draining; the rest of the delivery log is lost"
                    )
                    _exit(128 + number)
                }
            }
            source.resume()
            sources.append(source)
        }
    }

    /// Stops watching. The signals stay ignored: one that comes during the
    /// last moments of the exit does nothing.
    func cancel() {
        sources.forEach { $0.cancel() }
        sources.removeAll()
    }

    private static func log(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
