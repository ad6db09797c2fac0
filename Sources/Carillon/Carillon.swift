// The library applications import: every layer's public API under one name —
// the pure protocol layers, and the shells that run them on real sockets
// (`Member`, `MemberConfiguration`, `UDPEndpoint`, `FrameAuthenticator`, …),
// and the services (`ServiceNode`, `ReplicatedStateMachine`, locks, objects).
// The layers stay separate targets underneath (see docs/architecture.md), so
// their import rules can be checked; this module only re-exports them.
// tools/check-shadowing.sh checks that none of their public names hides a
// standard library or Foundation name.
@_exported import CarillonAuth
@_exported import CarillonBulk
@_exported import CarillonMembership
@_exported import CarillonOrdering
@_exported import CarillonRuntime
@_exported import CarillonSchedule
@_exported import CarillonServiceNode
@_exported import CarillonServices
@_exported import CarillonTransport
@_exported import CarillonWire

/// Version of the Carillon package.
public enum CarillonVersion {
    /// The package's semantic version.
    public static let string = "0.1.0"
}
