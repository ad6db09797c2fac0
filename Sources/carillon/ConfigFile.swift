import CarillonAuth
import CarillonMembership
import CarillonOrdering
import CarillonRuntime
import CarillonTransport
import Foundation

/// The JSON configuration file of a Carillon bus (docs/configuration.md).
/// Every member of a view reads the same file; `--member NAME` picks which
/// one a process is. Unknown keys are errors, so a typo never silently falls
/// back to a default.
struct ConfigFile {
    /// One member: its name, its bus address, and what else is this member's
    /// own (each member process on a host needs a port of its own).
    struct MemberEntry {
        var name: String
        var address: UDPEndpoint
        /// Where `carillon node` serves `GET /metrics` for this member (nil: nowhere);
        /// `--metrics-listen` overrides it.
        var metricsListen: UDPEndpoint?
        /// The node's local client endpoint (a Unix socket); nil: the default,
        /// ``ConfigFile/clientSocketPath(member:)``.
        var clientSocket: String?
    }

    /// The keys of an entry of "members".
    static let memberKeys: Set<String> = ["name", "address", "metrics_listen", "client_socket"]

    var members: [MemberEntry]
    var multicastGroup: UDPEndpoint?
    var roundPeriodMicros: Double = 100
    var reservation: Double = 0.5
    var delivery: DeliveryMode = .agreed
    var idle: IdleStrategy = .default
    var windowRounds = 256
    var maxFrameBytes = 1472
    var sendBufferBytes = 1 << 20
    var startAtNanos: UInt64 = 0
    var epoch: UInt32 = 1
    var suspicionSlots = 20
    var suspicionFloorMicros: Double = 3000
    var suspicionGapFactor = 3
    /// Promise mode: an idle member's heartbeat (its frames' least rate).
    var promiseHeartbeatMicros: Double = 3000
    var scheduling: AgentScheduling = .default
    /// Arrival times for clock estimation from the kernel (SO_TIMESTAMPNS); `false` only to compare.
    var kernelTimestamps = true
    /// How members order messages: "promises" or "slots" (each member sends
    /// in its TDMA slot every round). Promises by default: at light load a message leaves at once instead of
    /// waiting for its slot, and an idle member speaks once per heartbeat
    /// instead of every round (docs/protocol.md §15, docs/benchmarks.md).
    var ordering: OrderingMode = .promises
    /// The cluster key, or nil when the file says `"authentication": "off"`.
    var keyFile: String?
    var key: FrameAuthenticator?
    /// The bus's network: UDP (the default) or RDMA (docs/rdma.md).
    var transport: TransportChoice = .udp
    /// With `"transport": "rdma"`: the device, port and GID, and what to do without them.
    var rdma = RDMASettings()

    enum TransportChoice: String { case udp, rdma }

    struct RDMASettings: Equatable {
        var device: String?
        var port = 1
        var gidIndex: Int?
        /// Run over UDP when RDMA cannot be opened (true), or stop with the reason (false, the default).
        var fallbackToUDP = false
        static let keys: Set<String> = ["device", "port", "gid_index", "fallback"]
    }

    static let knownKeys: Set<String> = [
        "members", "multicast_group", "round_period_us", "reservation", "delivery", "idle", "window_rounds",
        "max_frame_bytes", "send_buffer_bytes", "start_at_ns", "epoch", "authentication", "suspicion_slots",
        "suspicion_floor_us", "suspicion_gap_factor", "scheduling", "lock_memory", "cpu", "ordering",
        "promise_heartbeat_us", "kernel_timestamps", "transport", "rdma"
    ]

    /// The values of "ordering".
    static let orderingModes = OrderingMode.allCases.map(\.rawValue)

    /// Parses the file's bytes; the error names the key and says what is wrong.
    init(json data: Data, path: String) throws(ConfigError) {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw ConfigError(path: path, key: nil, problem: "is not valid JSON (\(error.localizedDescription))")
        }
        guard let root = object as? [String: Any] else {
            throw ConfigError(path: path, key: nil, problem: "must be a JSON object with a \"members\" list")
        }
        for key in root.keys.sorted() where !Self.knownKeys.contains(key) {
            throw ConfigError(path: path, key: key, problem: "is not a known key (known: \(Self.knownKeys.sorted().joined(separator: ", ")))")
        }
        func fail(_ key: String, _ problem: String) -> ConfigError { ConfigError(path: path, key: key, problem: problem) }

        guard let list = root["members"] as? [Any], !list.isEmpty else {
            throw fail("members", "must be a non-empty list of {\"name\": …, \"address\": \"ip:port\"}")
        }
        members = []
        for (index, item) in list.enumerated() {
            let key = "members[\(index)]"
            guard let entry = item as? [String: Any], let name = entry["name"] as? String, !name.isEmpty,
                let text = entry["address"] as? String
            else { throw fail(key, "must be an object with a non-empty \"name\" and an \"address\" \"ip:port\"") }
            guard let address = UDPEndpoint(text) else { throw fail("\(key).address", "\"\(text)\" is not an IPv4 address:port") }
            guard !members.contains(where: { $0.name == name }) else { throw fail("\(key).name", "\"\(name)\" appears twice") }
            guard !members.contains(where: { $0.address == address }) else { throw fail("\(key).address", "\(address) appears twice") }
            for entryKey in entry.keys.sorted() where !Self.memberKeys.contains(entryKey) {
                throw fail("\(key).\(entryKey)", "is not a known key of a member (known: \(Self.memberKeys.sorted().joined(separator: ", ")))")
            }
            var metricsListen: UDPEndpoint?
            if let value = entry["metrics_listen"], !(value is NSNull) {
                guard let text = value as? String, let endpoint = UDPEndpoint(text) else {
                    throw fail(
                        "\(key).metrics_listen", "must be an IPv4 \"address:port\" to serve GET /metrics on (for example \"127.0.0.1:9464\"), or null"
                    )
                }
                metricsListen = endpoint
            }
            var clientSocket: String?
            if let value = entry["client_socket"], !(value is NSNull) {
                guard let text = value as? String, text.hasPrefix("/"), text.utf8.count < 108 else {
                    throw fail(
                        "\(key).client_socket",
                        "must be an absolute path of under 108 bytes for the node's Unix socket (for example \"/run/carillon/\(name).sock\"), or null"
                    )
                }
                clientSocket = text
            }
            members.append(MemberEntry(name: name, address: address, metricsListen: metricsListen, clientSocket: clientSocket))
        }
        if let value = root["multicast_group"], !(value is NSNull) {
            guard let text = value as? String, let group = UDPEndpoint(text), group.isMulticast else {
                throw fail("multicast_group", "must be an IPv4 multicast group \"224.0.0.0/4 address:port\", or null")
            }
            multicastGroup = group
        }
        /// `true` or `false` only, never 0/1: JSONSerialization gives them as Bool or as an NSNumber of type "c" (Linux).
        func flag(_ key: String) throws(ConfigError) -> Bool? {
            guard let value = root[key] else { return nil }
            let isBoolean =
                type(of: value) == Bool.self
                || (value as? NSNumber).map { String(cString: $0.objCType) == "c" } == true
            guard isBoolean, let flag = value as? Bool else { throw fail(key, "must be true or false") }
            return flag
        }
        func number(_ key: String, _ range: ClosedRange<Double>) throws(ConfigError) -> Double? {
            guard let value = root[key] else { return nil }
            // JSON true/false must not pass as 1/0.
            guard type(of: value) != Bool.self, let n = value as? NSNumber, range.contains(n.doubleValue) else {
                throw fail(key, "must be a number in \(range.lowerBound)...\(range.upperBound)")
            }
            return n.doubleValue
        }
        if let v = try number("round_period_us", 1...1_000_000) { roundPeriodMicros = v }
        if let v = try number("reservation", 0.000_001...1) { reservation = v }
        if let v = try number("window_rounds", 4...1_000_000) { windowRounds = Int(v) }
        if let v = try number("max_frame_bytes", 256...65_507) { maxFrameBytes = Int(v) }
        if let v = try number("send_buffer_bytes", 1_024...1e10) { sendBufferBytes = Int(v) }
        if let v = try number("start_at_ns", 0...1.8e19) { startAtNanos = UInt64(v) }
        if let v = try number("epoch", 0...4_294_967_295) { epoch = UInt32(v) }
        if let v = try number("suspicion_slots", 1...1_000_000) { suspicionSlots = Int(v) }
        if let v = try number("suspicion_floor_us", 0...60_000_000) { suspicionFloorMicros = v }
        if let v = try number("suspicion_gap_factor", 0...1_000) { suspicionGapFactor = Int(v) }
        if let v = try number("promise_heartbeat_us", 10...1_000_000) { promiseHeartbeatMicros = v }
        if let v = try flag("kernel_timestamps") { kernelTimestamps = v }
        if let value = root["scheduling"] {
            guard let text = value as? String, let policy = AgentScheduling.policy(text) else {
                throw fail("scheduling", "must be \"rr\", \"rr:PRIORITY\", \"fifo\", \"fifo:PRIORITY\" (priority 1–99) or \"normal\"")
            }
            scheduling.policy = policy
        }
        if let v = try flag("lock_memory") { scheduling.lockMemory = v }
        if let value = root["cpu"], !(value is NSNull) {
            guard type(of: value) != Bool.self, let n = value as? NSNumber, n.doubleValue >= 0, n.doubleValue < 1024,
                n.doubleValue == n.doubleValue.rounded()
            else { throw fail("cpu", "must be a CPU number (0, 1, …) or null") }
            scheduling.cpu = n.intValue
        }
        switch root["authentication"] {
        case let text as String where text == "off":
            key = nil
        case let object as [String: Any]:
            guard object.keys.sorted() == ["key_file"], let file = object["key_file"] as? String else {
                throw fail("authentication", "must be \"off\" or {\"key_file\": \"path to 64 hex digits\"}")
            }
            // Relative to the configuration file.
            let resolved = file.hasPrefix("/") ? file : URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(file).path
            // Refused unless only its owner can reach it (KeyFile says which file, its mode and the fix).
            do { key = try KeyFile.load(path: resolved) } catch { throw fail("authentication.key_file", "\(error)") }
            keyFile = file
        case nil:
            throw fail(
                "authentication",
                "is missing: give {\"key_file\": \"bus.key\"} (make one with `carillon keygen`), or \"off\" to run without frame authentication")
        default:
            throw fail("authentication", "must be \"off\" or {\"key_file\": \"path\"}")
        }
        if let value = root["delivery"] {
            guard let text = value as? String, let mode = DeliveryMode(rawValue: text) else {
                throw fail("delivery", "must be \"agreed\" or \"safe\"")
            }
            delivery = mode
        }
        if let value = root["ordering"] {
            guard let text = value as? String, let mode = OrderingMode(rawValue: text) else {
                let given = (value as? String).map { "\"\($0)\"" } ?? "\(value)"
                throw fail(
                    "ordering",
                    "must be \"promises\" (the default: send at once, idle members promise silence ahead) or \"slots\" (every member sends in its TDMA slot every round), not \(given)"
                )
            }
            ordering = mode
        }
        if let value = root["transport"] {
            guard let text = value as? String, let choice = TransportChoice(rawValue: text) else {
                throw fail("transport", "must be \"udp\" (the default) or \"rdma\" (libibverbs; see docs/rdma.md)")
            }
            transport = choice
        }
        if let value = root["rdma"], !(value is NSNull) {
            guard let object = value as? [String: Any] else {
                throw fail("rdma", "must be an object: {\"device\": \"mlx5_0\", \"port\": 1, \"gid_index\": 3, \"fallback\": \"udp\"}")
            }
            for key in object.keys.sorted() where !RDMASettings.keys.contains(key) {
                throw fail("rdma.\(key)", "is not a known key (known: \(RDMASettings.keys.sorted().joined(separator: ", ")))")
            }
            if let device = object["device"], !(device is NSNull) {
                guard let text = device as? String, !text.isEmpty else {
                    throw fail("rdma.device", "must be a device name such as \"mlx5_0\" (see `carillon devices`), or null for the first")
                }
                rdma.device = text
            }
            if let port = object["port"] {
                guard type(of: port) != Bool.self, let n = port as? NSNumber, (1...255).contains(n.doubleValue),
                    n.doubleValue == n.doubleValue.rounded()
                else {
                    throw fail("rdma.port", "must be a port number in 1...255 (see `carillon devices`)")
                }
                rdma.port = n.intValue
            }
            if let index = object["gid_index"], !(index is NSNull) {
                guard type(of: index) != Bool.self, let n = index as? NSNumber, (0...65_535).contains(n.doubleValue),
                    n.doubleValue == n.doubleValue.rounded()
                else {
                    throw fail("rdma.gid_index", "must be a GID table index (see `carillon devices`), or null for the first RoCE v2 entry")
                }
                rdma.gidIndex = n.intValue
            }
            if let fallback = object["fallback"] {
                guard let text = fallback as? String, ["udp", "none"].contains(text) else {
                    throw fail("rdma.fallback", "must be \"udp\" (run over UDP when RDMA cannot be opened) or \"none\" (stop with the reason)")
                }
                rdma.fallbackToUDP = text == "udp"
            }
        }
        if let value = root["idle"] {
            guard let text = value as? String, let strategy = IdleStrategy(text) else {
                throw fail("idle", "must be \"busy-spin\", \"spin-then-park\", \"spin-then-park:NANOS\" or \"blocking\"")
            }
            idle = strategy
        }
    }

    init(members: [MemberEntry]) { self.members = members }

    static func load(path: String) throws(ConfigError) -> ConfigFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(path: path, key: nil, problem: "cannot be read (does it exist?)")
        }
        return try ConfigFile(json: data, path: path)
    }

    /// The file as JSON, for the demo's generated configuration.
    func json() -> Data {
        var root: [String: Any] = [
            "members": members.map { entry -> [String: Any] in
                var object: [String: Any] = ["name": entry.name, "address": entry.address.description]
                if let metricsListen = entry.metricsListen { object["metrics_listen"] = metricsListen.description }
                if let clientSocket = entry.clientSocket { object["client_socket"] = clientSocket }
                return object
            },
            "round_period_us": roundPeriodMicros, "reservation": reservation, "delivery": delivery.rawValue,
            "idle": idleText, "window_rounds": windowRounds, "max_frame_bytes": maxFrameBytes,
            "send_buffer_bytes": sendBufferBytes, "start_at_ns": startAtNanos, "epoch": epoch,
            "suspicion_slots": suspicionSlots, "suspicion_floor_us": suspicionFloorMicros,
            "suspicion_gap_factor": suspicionGapFactor, "promise_heartbeat_us": promiseHeartbeatMicros,
            "scheduling": AgentScheduling.text(scheduling.policy),
            "lock_memory": scheduling.lockMemory, "ordering": ordering.rawValue, "kernel_timestamps": kernelTimestamps
        ]
        if let cpu = scheduling.cpu { root["cpu"] = cpu }
        if let multicastGroup { root["multicast_group"] = multicastGroup.description }
        if transport != .udp || rdma != RDMASettings() {
            root["transport"] = transport.rawValue
            var object: [String: Any] = ["port": rdma.port, "fallback": rdma.fallbackToUDP ? "udp" : "none"]
            if let device = rdma.device { object["device"] = device }
            if let gid = rdma.gidIndex { object["gid_index"] = gid }
            root["rdma"] = object
        }
        root["authentication"] = keyFile.map { ["key_file": $0] as Any } ?? "off"

        return try! JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
    }

    var idleText: String {
        switch idle {
        case .busySpin: return "busy-spin"
        case .blocking: return "blocking"
        case .spinThenPark(let spin): return "spin-then-park:\(spin)"
        }
    }

    /// Where member `name`'s node serves local clients: its "client_socket",
    /// else /tmp/carillon-PORT-NAME.sock (PORT: its bus port, so two buses on
    /// one host do not collide).
    func clientSocketPath(member name: String) -> String? {
        guard let entry = members.first(where: { $0.name == name }) else { return nil }
        return entry.clientSocket ?? "/tmp/carillon-\(entry.address.port)-\(name).sock"
    }

    /// The member configuration for `name`.
    func memberConfiguration(name: String, path: String) throws(ConfigError) -> MemberConfiguration {
        guard let rank = members.firstIndex(where: { $0.name == name }) else {
            throw ConfigError(
                path: path, key: "members", problem: "has no member named \"\(name)\" (names: \(members.map(\.name).joined(separator: ", ")))")
        }
        var configuration: MemberConfiguration
        do {
            configuration = try MemberConfiguration(
                node: rank, nodes: members.map(\.address), roundPeriodNanos: UInt64(roundPeriodMicros * 1000),
                reservation: reservation, startNanos: startAtNanos,
                authentication: key.map(MemberAuthentication.clusterKey) ?? .off)
        } catch { throw ConfigError(path: path, key: "round_period_us/reservation", problem: "\(error)") }
        configuration.multicastGroup = multicastGroup
        configuration.idleStrategy = idle
        configuration.kernelTimestamps = kernelTimestamps
        configuration.ordering.deliveryMode = delivery
        configuration.ordering.mode = ordering
        configuration.ordering.windowRounds = windowRounds
        configuration.ordering.maxFrameBytes = maxFrameBytes
        configuration.ordering.sendBufferBytes = sendBufferBytes
        configuration.ordering.epoch = epoch
        configuration.ordering.suspicionSlots = suspicionSlots
        configuration.ordering.suspicionFloorNanos = UInt64(suspicionFloorMicros * 1000)
        configuration.ordering.suspicionGapFactor = suspicionGapFactor
        configuration.ordering.promiseHeartbeatNanos = UInt64(promiseHeartbeatMicros * 1_000)
        configuration.scheduling = scheduling
        configuration.ordering.unheardSuspicionSlots = max(configuration.ordering.unheardSuspicionSlots, suspicionSlots)
        do { try configuration.ordering.validate() } catch {
            throw ConfigError(path: path, key: nil, problem: "describes an invalid member: \(error)")
        }
        // Every membership frame of a view of all the members must fit a frame.
        do { try configuration.membership.validate() } catch {
            throw ConfigError(path: path, key: "members", problem: "lists \(members.count) members: \(error)")
        }
        return configuration
    }
}

/// A configuration file error: the file, the key, and what is wrong with it.
struct ConfigError: Error, CustomStringConvertible {
    var path: String
    var key: String?
    var problem: String
    var description: String { key.map { "\(path): key \"\($0)\" \(problem)" } ?? "\(path) \(problem)" }
}
