// The library applications import: every layer's public API under one name.
// The layers stay separate targets underneath (see docs/architecture.md), so
// their import rules can be checked; this module only re-exports them.
@_exported import CarillonBulk
@_exported import CarillonMembership
@_exported import CarillonOrdering
@_exported import CarillonSchedule
@_exported import CarillonWire

/// Version of the Carillon package.
public enum CarillonVersion {
    public static let string = "0.1.0"
}
