import Foundation
import Glibc

/// Where the members of a benchmark run.
enum Placement: String {
    /// One network namespace per host on a bridge (root): real veth links, shapeable.
    case namespaces
    /// Separate processes on 127.0.0.1 (no root): the fallback, labelled as such in results.
    case loopback
}

/// The hosts of a run: N network namespaces on a bridge (names
/// `crlnb-<pid>-h<i>`, addresses `10.<150+pid%50>.0.<i+1>/24`, only inside
/// them), or N port ranges on loopback. Deleted on every exit path.
final class Topology {
    let placement: Placement
    let hosts: Int
    let prefix: String
    let subnet: String
    private var cleanupToken: Int?

    /// Namespaces (as root) or loopback (otherwise, or when asked).
    init(hosts: Int, placement: Placement, mtu: Int = 1500, shapeMbit: Double? = nil) throws {
        self.hosts = hosts
        self.placement = placement
        let pid = getpid()
        prefix = "crlnb-\(pid)"
        subnet = "10.\(150 + pid % 50).0"
        guard placement == .namespaces else {
            if shapeMbit != nil { throw BenchError("shaping a link needs network namespaces: run as root (sudo)") }
            return
        }
        guard getuid() == 0 else { throw BenchError("network namespaces need root: run with sudo, or pass --loopback") }
        for tool in ["ip", "tc"] where which(tool) == nil {
            throw BenchError("`\(tool)` is missing: apt-get install -y iproute2")
        }
        let names = (0..<hosts).map { "\(prefix)-h\($0)" } + ["\(prefix)-br"]
        cleanupToken = Cleanup.register { for name in names { _ = try? run(["ip", "netns", "delete", name]) } }
        let bridge = "\(prefix)-br"
        try run(["ip", "netns", "add", bridge])
        try run(["ip", "-n", bridge, "link", "add", "br0", "type", "bridge"])
        try run(["ip", "-n", bridge, "link", "set", "br0", "up"])
        for i in 0..<hosts {
            let ns = "\(prefix)-h\(i)"
            try run(["ip", "netns", "add", ns])
            try run(["ip", "link", "add", "h\(i)", "netns", ns, "type", "veth", "peer", "name", "p\(i)", "netns", bridge])
            try run(["ip", "-n", bridge, "link", "set", "p\(i)", "mtu", "\(mtu)"])
            try run(["ip", "-n", ns, "link", "set", "h\(i)", "mtu", "\(mtu)"])
            try run(["ip", "-n", bridge, "link", "set", "p\(i)", "master", "br0", "up"])
            try run(["ip", "-n", ns, "addr", "add", "\(subnet).\(i + 1)/24", "dev", "h\(i)"])
            try run(["ip", "-n", ns, "link", "set", "h\(i)", "up"])
            try run(["ip", "-n", ns, "link", "set", "lo", "up"])
            if let shapeMbit {
                // The host's link: a token bucket at the link rate with a small
                // burst; its queue holds what the senders' sockets let through.
                try run([
                    "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "h\(i)", "root", "tbf",
                    "rate", "\(Int(shapeMbit * 1000))kbit", "burst", "4kb", "latency", "200ms"
                ])
            }
        }
    }

    deinit { teardown() }

    func teardown() {
        if let token = cleanupToken {
            Cleanup.run(token)
            cleanupToken = nil
        }
    }

    /// Host i's address.
    func address(_ host: Int) -> String { placement == .namespaces ? "\(subnet).\(host + 1)" : "127.0.0.1" }

    /// Host i's bus port (the bulk channel uses the next one).
    func busPort(_ host: Int) -> Int { placement == .namespaces ? 7400 : 17400 + 10 * host }

    func namespace(_ host: Int) -> String { "\(prefix)-h\(host)" }

    /// The argv that runs `command` on host i.
    func command(host: Int, _ command: [String]) -> [String] {
        placement == .namespaces ? ["ip", "netns", "exec", namespace(host)] + command : command
    }

    /// "namespaces" or "loopback", for results.
    var label: String { placement.rawValue }
}
