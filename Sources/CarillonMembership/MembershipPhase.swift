/// Where a ``MembershipInstance`` stands, in the protocol's words
/// (docs/protocol.md §15): one stored value instead of flags.
///
/// ```
/// joining ──decision naming it──▶ awaitingState ──state received──▶ member
///    ▲                                  │                            │  ▲
///    │◀──── left behind / no donor ─────┘               promise or   │  │ next view
///    │                                                  decision     ▼  │ installed
///    │◀──────────── left out, cut below its deliveries ───────── changingView
///                                                                    │
///                   (after leave()) the view that lets it go ───────▶ left
/// ```
///
/// A member that hears less than a majority of its view stays ``member`` or
/// ``changingView`` (wedged) and reports ``ViewEvent/Kind/noPrimaryComponent(epoch:waitingRounds:)``:
/// it delivers nothing past the members it does not hear and never proposes.
/// After a heal it sees the later epoch of the majority's view and rejoins.
public enum MembershipPhase: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// No view: asking to join (a new process, a member left out of a view, or a
    /// late start of the first view), under its current incarnation.
    case joining
    /// In its first view after a join, waiting for the state at the view's cut:
    /// delivery is held and it takes no part in the agreement.
    case awaitingState
    /// A member of the installed view with no change under way: it sends and delivers.
    case member
    /// Wedged in a view change: it promised a ballot or learned a decision; it
    /// sends no data in this view and its delivery is frozen at the cut it reaches.
    case changingView
    /// Asked to leave (``MembershipInstance/leave()``) and let go by the cluster: stopped for good.
    case left

    public var description: String { rawValue }
}
