import ArgumentParser
import CarillonRuntime
import CarillonTransport
import CarillonVerbs
import Foundation

/// `carillon devices`: what RDMA devices and ports libibverbs finds here.
struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the RDMA devices and ports libibverbs finds (for \"transport\": \"rdma\").",
        discussion: """
            Each device with its ports: state, link layer (InfiniBand, or Ethernet for RoCE), active MTU \
            (the largest bus frame over RDMA), LID and the non-zero GID table entries with their types; \
            "rdma": {"gid_index": N} picks one (default: the first RoCE v2 entry). Without a device it \
            says what is missing and exits 0; docs/rdma.md says how to add soft-RoCE.
            Examples:
              carillon devices
            """)

    func run() throws {
        let devices: [VerbsDeviceInfo]
        do { devices = try VerbsDevices.list() } catch {
            print("no RDMA devices: \(error)")
            print("carillon node runs over UDP (the default, \"transport\": \"udp\").")
            return
        }
        guard !devices.isEmpty else {
            print("no RDMA devices: \(VerbsError.noDevice)")
            print("carillon node runs over UDP (the default, \"transport\": \"udp\").")
            return
        }
        for device in devices {
            print(device.name)
            if device.ports.isEmpty { print("  (could not be opened or queried: check permissions on /dev/infiniband)") }
            for port in device.ports {
                print(
                    "  port \(port.number): \(port.state), \(port.linkLayer), active MTU \(port.activeMTUBytes) bytes, LID \(port.lid)")
                for gid in port.gids { print("    gid \(gid.index): \(gid.gid) (\(gid.type))") }
            }
        }
    }
}

/// The bus's transport for a member of `file`: UDP, or RDMA as the file
/// says. Without RDMA: UDP with a note if the file allows it, else an
/// error naming what is missing (``RDMAUnavailable``).
func busTransport(file: ConfigFile, configuration: MemberConfiguration, member: String) throws -> any FrameTransport {
    guard file.transport == .rdma else { return try Member.udpTransport(for: configuration) }
    do throws(VerbsError) {
        var settings = LibVerbsSettings(device: file.rdma.device, port: file.rdma.port, gidIndex: file.rdma.gidIndex)
        settings.maxInlineBytes = 256
        // Every send is signalled: room for each send buffer's fan-out to every peer.
        let transportOptions = VerbsTransportOptions(
            rank: configuration.node, rendezvous: configuration.nodes, maxFrameBytes: configuration.ordering.maxFrameBytes)
        settings.sendQueueDepth = min(16_384, max(1_024, transportOptions.sendBuffers * (configuration.nodes.count - 1)))
        settings.receiveQueueDepth = max(1_024, transportOptions.receiveBuffers)
        let queue = try LibVerbsQueue(settings: settings)
        return try VerbsTransport(queue: queue, options: transportOptions)
    } catch {
        guard file.rdma.fallbackToUDP else { throw RDMAUnavailable(member: member, error: error) }
        FileHandle.standardError.write(
            Data("\(member): RDMA unavailable (\(error)); running over UDP as \"rdma\": {\"fallback\": \"udp\"} allows\n".utf8))
        return try Member.udpTransport(for: configuration)
    }
}

/// `"transport": "rdma"` without a usable device and without a fallback: the reason and what to do.
struct RDMAUnavailable: Error, CustomStringConvertible {
    var member: String
    var error: VerbsError
    var description: String { "\(member): RDMA unavailable: \(error). \(VerbsError.fallbackHint), or \"transport\": \"udp\"." }
}
