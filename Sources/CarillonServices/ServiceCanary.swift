/// Deliberately broken service variants (tests only): each breaks what one of
/// the services simulator's checkers guards (`carillon-sim --services
/// --canary NAME`), so a test can show that checker fails when it should.
@_spi(Canary) public enum ServiceCanary: String, Sendable, CaseIterable {
    /// ``LockService``: a try-acquire (no wait) of an exclusively held lock is
    /// granted anyway, beside the holder. Lock safety.
    case grantWhileHeld = "grant-while-held"
    /// ``LockService``: this replica's fencing tokens are one higher than the
    /// others' (the simulator sets it at one member only). Lock safety: the
    /// members' grants differ.
    case divergentTokens = "divergent-tokens"
    /// ``ServiceHost``: sessions remember nothing, so a retried request is
    /// applied again. Exactly-once.
    case forgetSessions = "forget-sessions"
    /// ``ObjectStore``: this replica numbers the versions of its puts one
    /// higher than the others do (the simulator sets it at one member only): a
    /// replica that is not deterministic. Replica equality.
    case divergentReplica = "divergent-replica"
    /// The simulator's client answers a `get` from its member's local state
    /// when it is asked (``ObjectStore/localValue(_:)``), not through the bus:
    /// a stale read passed off as linearizable. Linearizability.
    case staleLocalReads = "stale-local-reads"
    /// ``OwnedObjectService``: writes during a migration apply at once at the
    /// source instead of queueing until the commit, so the target's copy
    /// misses them. Object ownership (a committed write lost).
    case unfrozenMigration = "unfrozen-migration"
    /// ``OwnedObjectService``: a capability's tag is checked but not its
    /// rights. Capabilities (a read-only capability writes).
    case ignoreRights = "ignore-rights"
}
