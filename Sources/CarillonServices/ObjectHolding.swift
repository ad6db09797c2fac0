import CarillonMembership

/// One object's bytes on its way to a migration's target over the bulk
/// channel: `COT1`, the name, the migration (the migrate command's log
/// index), the version frozen, the digest of the bytes (``Digest64``), the bytes.
public struct ObjectTransfer: Sendable, Hashable {
    public static let magic: [UInt8] = Array("COT1".utf8)

    public var name: String
    public var migration: UInt64
    public var version: UInt64
    public var bytes: ObjectBytes
    /// The digest read and checked by ``decode(_:)``; nil for a transfer built to be sent.
    var checkedDigest: UInt64?

    public init(name: String, migration: UInt64, version: UInt64, bytes: ObjectBytes) {
        self.name = name
        self.migration = migration
        self.version = version
        self.bytes = bytes
    }

    public init(name: String, migration: UInt64, version: UInt64, bytes: [UInt8]) {
        self.init(name: name, migration: migration, version: version, bytes: ObjectBytes(bytes))
    }

    /// The digest of the bytes (``Digest64``; known without hashing again once decoded).
    public var digest: UInt64 { checkedDigest ?? bytes.digest }

    public static func == (a: ObjectTransfer, b: ObjectTransfer) -> Bool {
        a.name == b.name && a.migration == b.migration && a.version == b.version && a.bytes == b.bytes
    }

    public func hash(into h: inout Hasher) {
        h.combine(name)
        h.combine(migration)
        h.combine(version)
        h.combine(bytes)
    }

    /// The transfer as one flat array: every byte of the object is copied
    /// here, so a shell calls this off the thread that applies the bus.
    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: bytes.count + name.utf8.count + 32)
        w.raw(Self.magic)
        w.string16(name)
        w.u64(migration)
        w.u64(version)
        w.u64(digest)
        bytes.forEachChunk { w.raw($0) }
        return w.bytes
    }

    /// Whether `bytes` is an object transfer (and not another bulk transfer).
    public static func isTransfer(_ bytes: [UInt8]) -> Bool { bytes.count >= 4 && Array(bytes[0..<4]) == magic }

    /// Why a received transfer was refused.
    public enum Refusal: Error, Sendable, Hashable, CustomStringConvertible {
        case unreadable(ServiceDecodeError)
        case digestMismatch(expected: UInt64, found: UInt64)

        public var description: String {
            switch self {
            case .unreadable(let e): "an object transfer cannot be read: \(e)"
            case .digestMismatch(let e, let f): "an object transfer's digest is \(f), its header says \(e)"
            }
        }
    }

    /// Reads a transfer and checks its digest.
    public static func decode(_ bytes: [UInt8]) throws(Refusal) -> ObjectTransfer {
        let header: (String, UInt64, UInt64, UInt64, Int)
        do {
            header = try ByteReader.reading(bytes) { (r) throws(ServiceDecodeError) -> (String, UInt64, UInt64, UInt64, Int) in
                let m = try r.raw(4)
                guard Array(m) == magic else { throw .invalidField("not an object transfer") }
                return (try r.string16(), try r.u64(), try r.u64(), try r.u64(), r.offset)
            }
        } catch { throw .unreadable(error) }
        let digest = bytes.withUnsafeBytes { all in
            var d = Digest64()
            d.add(UnsafeRawBufferPointer(rebasing: all[header.4...]))
            return d.value
        }
        guard digest == header.3 else { throw .digestMismatch(expected: header.3, found: digest) }
        var transfer = ObjectTransfer(name: header.0, migration: header.1, version: header.2, bytes: ObjectBytes(bytes[header.4...]))
        transfer.checkedDigest = digest
        return transfer
    }
}

/// What one member does with its copies of owned objects: the bytes of the
/// objects it holds (as owner or backup) and what it received for
/// migrations. It applies the effects every member computes
/// (``ServiceOutput/objectEffects``), keeps those naming it, and says what
/// its shell must send. Pure: the runtime's service node and the simulator
/// drive the same code.
public struct ObjectHolding: Sendable {
    public struct Copy: Sendable, Hashable {
        public var bytes: ObjectBytes
        public var version: UInt64
    }

    /// What the shell must send for this member.
    public enum Action: Sendable, Hashable {
        /// Order this command (a read reply, a commit, an abort) from the member's own session.
        case order(OwnedObjectCommand)
        /// Send this transfer to `target` over the bulk channel.
        case send(ObjectTransfer, to: MemberID)
    }

    /// What went wrong, counted (each is zero when the machine and the holders agree).
    public struct Counters: Sendable, Hashable {
        /// Effects naming this member for an object it holds no copy of.
        public var missingCopies = 0
        /// Transfers refused (digest, unreadable) or for migrations already over.
        public var refusedTransfers = 0
        /// Migrations committed here, and sent from here.
        public var committed = 0
        public var sent = 0
        public init() {}
    }

    public let me: MemberID
    public private(set) var copies: [String: Copy] = [:]
    /// Transfers received for migrations not committed yet, by object.
    public private(set) var incoming: [String: ObjectTransfer] = [:]
    /// Migrations this member saw end (commit or abort): a transfer for one of them is stale.
    var finished: Set<UInt64> = []
    public private(set) var counters = Counters()

    public init(me: MemberID) { self.me = me }

    /// Applies one effect; returns what the shell must send.
    public mutating func apply(_ effect: ObjectEffect) -> [Action] {
        switch effect {
        case .allocate(let name, let size, let version, let holders):
            if holders.contains(me) { copies[name] = Copy(bytes: ObjectBytes(zeros: Int(size)), version: version) }
        case .write(let name, let offset, let bytes, let version, let holders):
            guard holders.contains(me) else { return [] }
            guard let count = copies[name]?.bytes.count, offset <= UInt64(count), bytes.count <= count - Int(offset) else {
                counters.missingCopies += 1
                return []
            }
            copies[name]!.bytes.write(bytes, at: Int(offset))
            copies[name]!.version = version
        case .drop(let name, let members):
            if members.contains(me) {
                copies[name] = nil
                incoming[name] = nil
            }
        case .serveRead(let name, let owner, let session, let requestID, let offset, let length, _):
            guard owner == me else { return [] }
            guard let copy = copies[name], offset <= UInt64(copy.bytes.count), Int(length) <= copy.bytes.count - Int(offset) else {
                counters.missingCopies += 1
                return []
            }
            let start = Int(offset)
            let bytes = copy.bytes.bytes(in: start..<(start + Int(length)))
            return [.order(.readReply(name: name, session: session, requestID: requestID, version: copy.version, bytes: bytes))]
        case .transfer(let name, let migration, let source, let target, _):
            guard source == me else { return [] }
            guard let copy = copies[name] else {
                counters.missingCopies += 1
                return [.order(.abortMigration(name: name, migration: migration))]
            }
            counters.sent += 1
            return [.send(ObjectTransfer(name: name, migration: migration, version: copy.version, bytes: copy.bytes), to: target)]
        case .committed(let name, let migration, let target, let dropAt):
            finished.insert(migration)
            if target == me {
                if let t = incoming[name], t.migration == migration {
                    copies[name] = Copy(bytes: t.bytes, version: t.version)
                    incoming[name] = nil
                    counters.committed += 1
                } else {
                    counters.missingCopies += 1
                }
            }
            if dropAt.contains(me) { copies[name] = nil }
        case .aborted(let name, let migration, let target):
            finished.insert(migration)
            if target == me, incoming[name]?.migration == migration { incoming[name] = nil }
        case .finishWithoutSource(let name, let migration, let target):
            guard target == me else { return [] }
            if incoming[name]?.migration == migration {
                return [.order(.commitMigration(name: name, migration: migration, digest: incoming[name]!.digest))]
            }
            return [.order(.abortMigration(name: name, migration: migration))]
        }
        return []
    }

    /// A transfer arrived on the bulk channel: kept (and a commit ordered) if
    /// its digest holds and its migration is not over.
    public mutating func received(_ bytes: [UInt8]) -> Result<[Action], ObjectTransfer.Refusal> {
        let transfer: ObjectTransfer
        do { transfer = try ObjectTransfer.decode(bytes) } catch {
            refused()
            return .failure(error)
        }
        return .success(accept(transfer))
    }

    /// Counts a transfer its receiver could not read (decoded outside, ``ObjectTransfer/decode(_:)``).
    public mutating func refused() { counters.refusedTransfers += 1 }

    /// A transfer decoded and digest-checked by the shell (off the thread
    /// that applies the bus): kept, and its commit ordered, unless its
    /// migration is over.
    public mutating func accept(_ transfer: ObjectTransfer) -> [Action] {
        guard !finished.contains(transfer.migration) else {
            counters.refusedTransfers += 1
            return []
        }
        incoming[transfer.name] = transfer
        return [.order(.commitMigration(name: transfer.name, migration: transfer.migration, digest: transfer.digest))]
    }

    /// Whether this member saw migration `id` end (commit or abort).
    public func hasFinished(_ migration: UInt64) -> Bool { finished.contains(migration) }

    /// The copy of `name` held here, if any.
    public func copy(of name: String) -> Copy? { copies[name] }
}
