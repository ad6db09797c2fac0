import ArgumentParser
import CarillonClient
import CarillonServices
import Dispatch
import Foundation

/// A capability given on the command line: its text (`cap1-…`) or `@FILE` holding it.
func readCapability(_ argument: String) throws -> Capability {
    var text = argument
    if argument.hasPrefix("@") {
        let path = String(argument.dropFirst())
        guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("cannot read a capability from \(path)")
        }
        text = contents.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    do { return try Capability(text: text) } catch {
        throw ValidationError("--cap is not a capability (\(error)); give the cap1-… text that create or grant printed, or @FILE")
    }
}

/// Sizes like 4096, 64KiB, 64MiB, 1GiB.
func parseSize(_ text: String) -> UInt64? {
    let units: [(String, UInt64)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        guard let n = UInt64(text.dropLast(suffix.count)) else { return nil }
        let (product, overflow) = n.multipliedReportingOverflow(by: scale)
        return overflow ? nil : product
    }
    return UInt64(text)
}

struct Obj: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "obj",
        abstract: "Owned objects: bytes that live on one member, move in bus order, and are reached through capabilities.",
        discussion: """
            An object has one owner (where its bytes are) and optional backups. `create` prints a \
            capability with every right (read, write, migrate, grant): keep it — every other command \
            but `where` and `list` needs one (`--cap cap1-…` or `--cap @FILE`). `carillon cap grant` \
            delegates fewer rights. Reads and writes are ordered on the bus and served by the owner; \
            a migration freezes the object, sends its bytes over the bulk channel and moves the \
            ownership at the target's ordered commit (operations meanwhile wait in bus order).

            Exit status: 0 done; 1 refused (not found, exists, bad request); 69 no node serves the \
            socket; 75 no primary component, the object was lost or its migration aborted; 77 the \
            capability does not allow it.

            Examples:
              carillon obj create --config bus.json --member a --size 64MiB --backups 1 cache/users > users.cap
              carillon obj put --config bus.json --member b --cap @users.cap --offset 0 "hello"
              carillon obj get --config bus.json --member c --cap @users.cap --offset 0 --length 5
              carillon obj migrate --config bus.json --member a --cap @users.cap --to c
              carillon obj migrate --config bus.json --member a --cap @users.cap --to auto
              carillon obj where --config bus.json --member b cache/users
              carillon obj list --config bus.json --member a cache/
            """,
        subcommands: [ObjCreate.self, ObjGet.self, ObjPut.self, ObjMigrate.self, ObjWhere.self, ObjList.self, ObjDelete.self])
}

struct ObjCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create an object of --size zero bytes; prints its capability (every right).")
    @OptionGroup var endpoint: EndpointOptions
    @Option(help: "Its size: bytes, or with KiB, MiB, GiB.") var size: String
    @Option(help: "Copies on the next members of the view (promoted if the owner fails).") var backups: UInt8 = 0
    @Option(help: "The owner's member name or node index (default: the node you talk to).") var owner: String?
    @Argument(help: "The object's name (at most 256 bytes).") var name: String

    func validate() throws {
        guard parseSize(size) != nil else { throw ValidationError("--size \(size) is not a size; write bytes or 64KiB, 64MiB, 1GiB") }
        if name.utf8.count > OwnedObjectService.maximumNameBytes {
            throw ValidationError("an object's name is at most \(OwnedObjectService.maximumNameBytes) bytes")
        }
    }

    func run() throws {
        let client = try endpoint.connect()
        let name = self.name, size = parseSize(self.size)!, backups = self.backups, consistency = endpoint.consistency
        let owner = try self.owner.map { try endpoint.node(named: $0) }
        let cap = try runClient { try await client.createObject(name, size: size, backups: backups, owner: owner, consistency: consistency) }
        print(cap.text)
    }
}

/// The capability options of the commands on one object.
struct CapabilityOption: ParsableArguments {
    @Option(help: ArgumentHelp("The object's capability: cap1-… as create or grant printed it, or @FILE.", valueName: "cap")) var cap: String

    func capability() throws -> Capability { try readCapability(cap) }
}

struct ObjGet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Read bytes of an object (ordered; served by its owner) to standard output or --out.",
        discussion: "Reads are at most 1 KiB each on the bus; longer ranges are read in parts, --window at once, with progress on standard error.")
    @OptionGroup var endpoint: EndpointOptions
    @OptionGroup var capability: CapabilityOption
    @Option(help: "The first byte.") var offset: UInt64 = 0
    @Option(help: "How many bytes (default: to the end).") var length: UInt64?
    @Option(help: "Write the bytes to this file instead of standard output.") var out: String?
    @Option(help: "Reads in flight at once.") var window = 32
    @Flag(help: "Print the version read before the bytes (one line).") var version = false

    func validate() throws {
        if !(1...ServiceHostWindow.limit).contains(window) { throw ValidationError("--window must be in 1...\(ServiceHostWindow.limit)") }
    }

    func run() throws {
        let client = try endpoint.connect()
        let cap = try capability.capability(), consistency = endpoint.consistency, offset = self.offset, window = self.window
        let size = try runClient { try await client.locateObject(cap.name, consistency: consistency).size }
        guard offset <= size else { throw ValidationError("--offset \(offset) is past the end of \(cap.name) (\(size) bytes)") }
        let length = min(self.length ?? (size - offset), size - offset)
        let part: UInt64 = 1024
        let parts = Int((length + part - 1) / part)
        let started = DispatchTime.now().uptimeNanoseconds
        let reads = try runClient {
            try await withThrowingTaskGroup(of: (Int, ObjectRead).self) { group in
                var results = [ObjectRead?](repeating: nil, count: parts)
                var lastReport = started
                for p in 0..<parts {
                    if p >= window, let (i, r) = try await group.next() { results[i] = r }
                    let at = offset + UInt64(p) * part
                    let n = UInt32(min(part, offset + length - at))
                    group.addTask { (p, try await client.readObject(cap, at: at, length: n, consistency: consistency)) }
                    let now = DispatchTime.now().uptimeNanoseconds
                    if parts > 1024, now - lastReport > 2_000_000_000 {
                        lastReport = now
                        FileHandle.standardError.write(Data("carillon: read \(p) of \(parts) parts of \(cap.name)\n".utf8))
                    }
                }
                while let (i, r) = try await group.next() { results[i] = r }
                return results.map { $0! }
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(length))
        for r in reads { bytes += r.bytes }
        if version { print(reads.map(\.version).max() ?? 0) }
        if let out {
            guard FileManager.default.createFile(atPath: out, contents: Data(bytes)) else { throw ValidationError("cannot write \(out)") }
        } else {
            FileHandle.standardOutput.write(Data(bytes))
        }
    }
}

struct ObjPut: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Write bytes into an object at --offset (ordered; applied at its owner and backups); prints the new version.",
        discussion: "Writes are at most 1 KiB each on the bus; longer data is written in parts, in order.")
    @OptionGroup var endpoint: EndpointOptions
    @OptionGroup var capability: CapabilityOption
    @Option(help: "Where the bytes go.") var offset: UInt64 = 0
    @Option(help: "Write this file's bytes instead of VALUE.") var file: String?
    @Argument(help: "The bytes to write (UTF-8).") var value: String?

    func validate() throws {
        if (file == nil) == (value == nil) { throw ValidationError("give the bytes to write: VALUE, or --file FILE") }
    }

    func run() throws {
        let client = try endpoint.connect()
        let cap = try capability.capability(), consistency = endpoint.consistency, offset = self.offset
        let bytes: [UInt8]
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
            bytes = [UInt8](data)
        } else {
            bytes = Array(value!.utf8)
        }
        let version = try runClient {
            var version: UInt64 = 0
            var at = 0
            repeat {
                let end = min(bytes.count, at + 1024)
                version = try await client.writeObject(cap, at: offset + UInt64(at), Array(bytes[at..<end]), consistency: consistency)
                at = end
            } while at < bytes.count
            return version
        }
        print(version)
    }
}

struct ObjMigrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Move an object to another member (--to NAME or node index, auto: least loaded, used: where it is used most).",
        discussion: "Prints the new owner, the version moved and the time from request to commit. Exit 75 if the migration aborted.")
    @OptionGroup var endpoint: EndpointOptions
    @OptionGroup var capability: CapabilityOption
    @Option(help: "The target: a member name (with --config), a node index, auto, or used.") var to: String

    func run() throws {
        let client = try endpoint.connect()
        let cap = try capability.capability(), consistency = endpoint.consistency
        let target: MigrationTarget
        switch to {
        case "auto": target = .leastLoaded
        case "used": target = .mostUsed
        default: target = .node(try endpoint.node(named: to))
        }
        let started = DispatchTime.now().uptimeNanoseconds
        let moved = try runClient { try await client.migrateObject(cap, to: target, consistency: consistency) }
        let millis = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
        print("\(cap.name) owned by \(moved.owner) at version \(moved.version) (\(String(format: "%.1f", millis)) ms)")
    }
}

struct ObjWhere: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "where", abstract: "Print where an object lives: owner, backups, version, size and state (ordered).")
    @OptionGroup var endpoint: EndpointOptions
    @Argument var name: String

    func run() throws {
        let client = try endpoint.connect()
        let name = self.name, consistency = endpoint.consistency
        print(try runClient { try await client.locateObject(name, consistency: consistency) })
    }
}

struct ObjList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List objects (starting with PREFIX) with owners and states.")
    @OptionGroup var endpoint: EndpointOptions
    @Argument var prefix: String = ""

    func run() throws {
        let client = try endpoint.connect()
        let prefix = self.prefix, consistency = endpoint.consistency
        for location in try runClient({ try await client.listObjects(prefix: prefix, consistency: consistency) }) { print(location) }
    }
}

struct ObjDelete: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete an object (every copy; needs the write right).")
    @OptionGroup var endpoint: EndpointOptions
    @OptionGroup var capability: CapabilityOption

    func run() throws {
        let client = try endpoint.connect()
        let cap = try capability.capability(), consistency = endpoint.consistency
        try runClient { try await client.deleteObject(cap, consistency: consistency) }
    }
}

struct Cap: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cap",
        abstract: "Capabilities: delegate fewer rights, revoke what was delegated, show what one carries.",
        discussion: """
            Rights are letters: r read (and where), w write and delete, m migrate, g grant (delegate and \
            revoke). A capability is keyed by the cluster key and the run: it cannot be made or widened \
            without the key, and a revocation is ordered — every member refuses the revoked capability \
            (and everything delegated from it) from the same position on.

            Examples:
              carillon cap grant --config bus.json --member a --cap @users.cap --rights r > users-read.cap
              carillon cap show @users-read.cap
              carillon cap revoke --config bus.json --member a --cap @users.cap --id 42
              carillon cap lock --config bus.json --member a backup > backup.cap   (lock "backup" now needs it)
              carillon lock --config bus.json --member b --cap @backup.cap backup -- ./backup.sh
            """,
        subcommands: [CapGrant.self, CapRevoke.self, CapShow.self, CapLock.self])
}

struct CapGrant: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grant", abstract: "Delegate a capability with --rights (a subset of its own); prints the new one.")
    @OptionGroup var endpoint: EndpointOptions
    @OptionGroup var capability: CapabilityOption
    @Option(help: "The rights to give: letters of rwmg.") var rights: String

    func validate() throws {
        guard CapabilityRights(letters: rights) != nil else { throw ValidationError("--rights takes letters of rwmg (read, write, migrate, grant)") }
    }

    func run() throws {
        let client = try endpoint.connect()
        let cap = try capability.capability(), consistency = endpoint.consistency, rights = CapabilityRights(letters: self.rights)!
        print(try runClient { try await client.grant(cap, rights: rights, consistency: consistency) }.text)
    }
}

struct CapRevoke: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke", abstract: "Revoke capability --id (and what was delegated from it), using --cap, an ancestor with the grant right.")
    @OptionGroup var endpoint: EndpointOptions
    @OptionGroup var capability: CapabilityOption
    @Option(help: "The id of the capability to revoke (cap show prints it).") var id: UInt64

    func run() throws {
        let client = try endpoint.connect()
        let cap = try capability.capability(), consistency = endpoint.consistency, id = self.id
        try runClient { try await client.revoke(id, using: cap, consistency: consistency) }
    }
}

struct CapLock: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock",
        abstract: "Put a lock behind capabilities; prints its capability (every right).",
        discussion: """
            From this command's position on, every member refuses to acquire, release or cancel the lock \
            without a capability for it with the w right (exit 77); grant and revoke work as for objects. \
            Once only: a protected lock stays protected.
            """)
    @OptionGroup var endpoint: EndpointOptions
    @Argument(help: "The lock's name.") var name: String

    func run() throws {
        let client = try endpoint.connect()
        let name = self.name, consistency = endpoint.consistency
        print(try runClient { try await client.protectLock(name, consistency: consistency) }.text)
    }
}

struct CapShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print what a capability names and carries (kind, object, rights, id).",
        discussion: "Read locally: whether it is genuine and not revoked is decided by the bus when it is presented.")
    @Argument(help: "cap1-… or @FILE.") var cap: String

    func run() throws {
        let c = try readCapability(cap)
        print("\(c.kind == .object ? "object" : "lock") \(c.name)\trights \(c.rights)\tid \(c.id)")
    }
}
