@testable import CarillonMembership
import CarillonOrdering
import CarillonSchedule
import CarillonWire
import Testing

/// The membership layer's size limit (``MembershipConfiguration/maximumMemberCount``)
/// and its input checks: at the limit every membership frame kind fits, one
/// past it the configuration is refused with an error saying what to change,
/// and node indices from the wire never reach an index or a view unchecked.
@Suite("Membership limits: the maximum member count and range-checked node indices")
struct LimitsTests {
    static let frameBytes = 1_472
    static let tagLength = 16

    static func configuration(
        nodes: Int, me node: Int = 0, joining: Bool = false,
        maxFrameBytes: Int = frameBytes
    ) throws -> MembershipConfiguration {
        let schedule = try TDMASchedule(memberCount: nodes, roundPeriodNanos: 1_000_000, reservation: 0.5)
        var ordering = OrderingConfiguration(rank: node, schedule: schedule)
        ordering.tagLength = tagLength
        ordering.maxFrameBytes = maxFrameBytes
        let members = (0..<nodes).map { MemberID(node: UInt16($0), incarnation: 7) }
        let me = joining ? MemberID(node: UInt16(node), incarnation: 9) : members[node]
        var configuration = MembershipConfiguration(
            me: me, initialView: joining ? nil : View(epoch: 1, members: members, startRound: 0), ordering: ordering)
        configuration.runIdentity = joining ? 0 : 7
        return configuration
    }

    /// Encodes one membership frame into a buffer of `capacity` bytes and decodes it.
    static func roundTrip(
        capacity: Int, fields: [RankEntry], positions: [UInt64]?, proposal: ViewProposal?,
        chunk: (offset: Int, bytes: [UInt8])? = nil
    ) throws -> (length: Int, fields: Int, positions: Int, members: Int, cut: Int, chunkBytes: Int) {
        var buffer = [UInt8](repeating: 0, count: capacity)
        let length = try buffer.withUnsafeMutableBytes { raw in
            try MembershipFrame.encode(
                into: raw, sender: 3, epoch: 9, round: 1_000, nowNanos: 1, fields: fields,
                positions: positions, proposal: proposal, chunk: chunk, tagLength: tagLength)
        }
        return try buffer.withUnsafeBytes { raw in
            let frame = try FrameView.decode(UnsafeRawBufferPointer(rebasing: raw[0..<length]))
            return (
                length, frame.viewFieldEntries.count, frame.viewPositionEntries.count, frame.viewMemberEntries.count,
                frame.viewCutEntries.count, frame.messages.reduce(0) { $0 + $1.payload.count }
            )
        }
    }

    /// Every view field an agreement frame can carry, with `startRound` added by the proposal.
    static let agreementFields: [ViewField] = [
        .incarnation, .run, .promisedBallot, .proposingBallot, .acceptedBallot, .decided, .holdsCut, .leaving, .stateReceived
    ]

    @Test func theStatedMaximumFollowsFromTheLargestFrame() {
        // (1472 − 192 − 16) / 36 = 35.1: 35 members with 1,472-byte frames and 16-byte tags.
        #expect(MembershipConfiguration.maximumMemberCount == 35)
        #expect(MembershipConfiguration.maximumMemberCount(maxFrameBytes: 1_472, tagLength: 16) == 35)
        #expect(MembershipFrame.largestFrameBytes(memberCount: 35, tagLength: 16) == 192 + 36 * 35 + 16)
        #expect(MembershipConfiguration.maximumMemberCount(maxFrameBytes: 9_000, tagLength: 16) == 244)
        #expect(Self.agreementFields.count + 1 == MembershipFrame.maxViewFields)
    }

    @Test func everyFrameKindFitsAtTheMaximumMemberCount() throws {
        let n = MembershipConfiguration.maximumMemberCount(maxFrameBytes: Self.frameBytes, tagLength: Self.tagLength)
        let members = (0..<n).map { MemberID(node: UInt16($0), incarnation: .max - UInt64($0)) }
        let proposal = ViewProposal(members: members, cut: Array(repeating: .max, count: n), startRound: .max)
        let positions = [UInt64](repeating: .max, count: n)
        let fields = Self.agreementFields.map { RankEntry(rank: $0.rawValue, value: .max) }

        // The agreement frame: every field, positions, the largest proposal. The
        // stated arithmetic is the encoder's, byte for byte.
        let agreement = try Self.roundTrip(capacity: Self.frameBytes, fields: fields, positions: positions, proposal: proposal)
        #expect(agreement.length == MembershipFrame.largestFrameBytes(memberCount: n, tagLength: Self.tagLength))
        #expect(agreement.length <= Self.frameBytes)
        #expect(agreement.fields == MembershipFrame.maxViewFields && agreement.positions == n)
        #expect(agreement.members == n && agreement.cut == n)
        // An announcement (the decision restated), a join request, a state-transfer chunk of the largest size.
        let announcement = try Self.roundTrip(
            capacity: Self.frameBytes,
            fields: [ViewField.incarnation, .run, .acceptedBallot, .decided].map { RankEntry(rank: $0.rawValue, value: .max) },
            positions: nil, proposal: proposal)
        #expect(announcement.members == n && announcement.length <= Self.frameBytes)
        let join = try Self.roundTrip(
            capacity: Self.frameBytes,
            fields: [
                RankEntry(rank: ViewField.incarnation.rawValue, value: .max),
                RankEntry(rank: ViewField.joinRequest.rawValue, value: .max)
            ],
            positions: nil, proposal: nil)
        #expect(join.fields == 2)
        let chunkBytes = Self.frameBytes - MembershipFrame.stateChunkOverheadBytes(tagLength: Self.tagLength)
        let chunk = try Self.roundTrip(
            capacity: Self.frameBytes,
            fields: [ViewField.incarnation, .run, .stateFor, .stateBytes].map { RankEntry(rank: $0.rawValue, value: .max) },
            positions: nil, proposal: nil, chunk: (0, [UInt8](repeating: 0xA5, count: chunkBytes)))
        #expect(chunk.chunkBytes == chunkBytes && chunk.length <= Self.frameBytes)

        // One member more and the agreement frame does not fit: the limit is tight.
        let more = n + 1
        let larger = ViewProposal(
            members: (0..<more).map { MemberID(node: UInt16($0), incarnation: 1) },
            cut: Array(repeating: 0, count: more), startRound: 0)
        #expect(throws: WireError.self) {
            _ = try Self.roundTrip(
                capacity: Self.frameBytes, fields: fields, positions: Array(repeating: 0, count: more),
                proposal: larger)
        }

        // A member of a view of that many members starts, and so does a joiner.
        let instance = try MembershipInstance(configuration: Self.configuration(nodes: n, me: n - 1))
        #expect(instance.view?.members.count == n)
        _ = try MembershipInstance(configuration: Self.configuration(nodes: n, me: n - 1, joining: true))
    }

    @Test func onePastTheMaximumIsRefusedWithWhatToChange() throws {
        let n = MembershipConfiguration.maximumMemberCount + 1
        let configuration = try Self.configuration(nodes: n)
        #expect(
            throws: MembershipConfigurationError.tooManyMembers(
                memberCount: 36, maximumMemberCount: 35, maxFrameBytes: 1_472, tagLength: 16, neededFrameBytes: 1_504)
        ) {
            _ = try MembershipInstance(configuration: configuration)
        }
        do {
            try configuration.validate()
            Issue.record("36 members validated")
        } catch {
            #expect(
                error.description.contains("at most 35 members") && error.description.contains("at least 1504"),
                "\(error)")
        }
        // Larger frames make room (jumbo frames).
        _ = try MembershipInstance(configuration: Self.configuration(nodes: n, maxFrameBytes: 1_504))
    }

    @Test func nodeIndicesFromTheWireAreRangeChecked() throws {
        let nodes = 5
        var effects = MembershipEffects()
        var member = try MembershipInstance(configuration: Self.configuration(nodes: nodes))
        var joiner = try MembershipInstance(configuration: Self.configuration(nodes: nodes, me: 4, joining: true))

        func frame(sender: UInt16, epoch: UInt32, fields: [RankEntry], proposal: ViewProposal? = nil) throws -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: Self.frameBytes)
            let length = try buffer.withUnsafeMutableBytes { raw in
                try MembershipFrame.encode(
                    into: raw, sender: sender, epoch: epoch, round: 0, nowNanos: 1, fields: fields,
                    positions: nil, proposal: proposal, chunk: nil, tagLength: Self.tagLength)
            }
            return Array(buffer[0..<length])
        }
        // A join request from node 5 of a 5-node cluster, and from node 65535.
        for sender in [UInt16(nodes), .max] {
            let request = try frame(
                sender: sender, epoch: 0,
                fields: [
                    RankEntry(rank: ViewField.incarnation.rawValue, value: 99),
                    RankEntry(rank: ViewField.joinRequest.rawValue, value: 99)
                ])
            request.withUnsafeBytes { _ = member.onFrameReceived($0, nowNanos: 1_000, effects: &effects) }
        }
        #expect(member.counters.outOfRangeFrames == 2)
        #expect(member.counters.joinRequestsHeard == 0)
        // A decision naming node 9 (or node 1 twice) admits nobody: the joiner drops it.
        let decided = [ViewField.incarnation, .run, .acceptedBallot, .decided].map { RankEntry(rank: $0.rawValue, value: 7) }
        for members in [
            [MemberID(node: 0, incarnation: 7), MemberID(node: 9, incarnation: 7), MemberID(node: 4, incarnation: 9)],
            [MemberID(node: 1, incarnation: 7), MemberID(node: 1, incarnation: 8), MemberID(node: 4, incarnation: 9)]
        ] {
            let proposal = ViewProposal(members: members, cut: [0, 0, 0, 0, 0], startRound: 10)
            try frame(sender: 0, epoch: 1, fields: decided, proposal: proposal).withUnsafeBytes {
                _ = joiner.onFrameReceived($0, nowNanos: 1_000, effects: &effects)
            }
        }
        #expect(joiner.counters.outOfRangeFrames == 2)
        #expect(joiner.view == nil)
        // State transfer addressed past the node range (it would truncate to node 4 as a UInt16).
        let stateFor = [
            RankEntry(rank: ViewField.incarnation.rawValue, value: 7), RankEntry(rank: ViewField.run.rawValue, value: 7),
            RankEntry(rank: ViewField.stateFor.rawValue, value: 0x1_0004), RankEntry(rank: ViewField.stateBytes.rawValue, value: 1)
        ]
        try frame(sender: 1, epoch: 1, fields: stateFor).withUnsafeBytes {
            _ = member.onFrameReceived($0, nowNanos: 1_000, effects: &effects)
        }
        #expect(member.counters.outOfRangeFrames == 3)
        // A well-formed join request from node 4 is heard.
        let request = try frame(
            sender: 4, epoch: 0,
            fields: [
                RankEntry(rank: ViewField.incarnation.rawValue, value: 99),
                RankEntry(rank: ViewField.joinRequest.rawValue, value: 99)
            ])
        request.withUnsafeBytes { _ = member.onFrameReceived($0, nowNanos: 1_000, effects: &effects) }
        #expect(member.counters.joinRequestsHeard == 1 && member.counters.outOfRangeFrames == 3)
    }

    @Test func aConfigurationNamingNodesOutsideTheClusterIsRefused() throws {
        var configuration = try Self.configuration(nodes: 3)
        configuration.me = MemberID(node: 3, incarnation: 7)
        #expect(throws: MembershipConfigurationError.nodeOutOfRange(node: 3, nodeCount: 3)) { try configuration.validate() }
        configuration = try Self.configuration(nodes: 3)
        configuration.initialView!.members[2].node = 1
        #expect(throws: MembershipConfigurationError.duplicateNode(1)) { try configuration.validate() }
    }
}
