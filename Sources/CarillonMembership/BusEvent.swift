import CarillonOrdering

/// Where a message sits in the total order: the view's epoch, the round, the
/// slot (the sender's rank in that view) and the message's index in the
/// sender's batch for that round. Positions compare in delivery order.
public struct BusPosition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var epoch: UInt32
    public var round: UInt64
    public var slot: Int
    public var index: Int

    public init(epoch: UInt32, round: UInt64, slot: Int, index: Int) {
        self.epoch = epoch
        self.round = round
        self.slot = slot
        self.index = index
    }

    public static func < (a: BusPosition, b: BusPosition) -> Bool {
        (a.epoch, a.round, a.slot, a.index) < (b.epoch, b.round, b.slot, b.index)
    }

    public var description: String { "\(epoch):\(round):\(slot):\(index)" }
}

extension OrderingEffects.Delivery {
    /// The delivery's place in the total order.
    public var position: BusPosition { BusPosition(epoch: epoch, round: round, slot: sender, index: index) }
}

/// One event of the stream a member hands its application, in bus order: a
/// delivered message or a view event. Every member of a view sees the same
/// events in the same order (a joiner's stream starts at its state).
///
/// This is the seam services are built on: the runtime and the simulator both
/// walk ``MembershipEffects`` with ``MembershipEffects/forEachBusEvent(_:)``
/// and hand the events on, so the interleaving of deliveries and view events
/// is written once.
public enum BusEvent {
    /// A message, its payload valid only during the call.
    case delivered(OrderingEffects.Delivery, payload: UnsafeRawBufferPointer)
    /// A view event at this point of the stream.
    case view(ViewEvent.Kind)
}

extension MembershipEffects {
    /// Calls `body` with every delivery and view event of these effects in bus
    /// order: each view event after the first ``ViewEvent/deliveriesBefore``
    /// deliveries.
    public func forEachBusEvent<E: Error>(_ body: (BusEvent) throws(E) -> Void) throws(E) {
        var nextEvent = 0
        let deliveries = ordering.deliveries
        for index in deliveries.indices {
            while nextEvent < events.count, events[nextEvent].deliveriesBefore <= index {
                try body(.view(events[nextEvent].kind))
                nextEvent += 1
            }
            let delivery = deliveries[index]
            try ordering.withPayload(of: delivery) { (payload) throws(E) in try body(.delivered(delivery, payload: payload)) }
        }
        while nextEvent < events.count {
            try body(.view(events[nextEvent].kind))
            nextEvent += 1
        }
    }
}
