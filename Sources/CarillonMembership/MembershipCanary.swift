/// Deliberately broken membership variants: each brings back one defect a
/// rule of the membership layer removes, so a test can show that the
/// simulator's checkers catch it (tests only; set through
/// ``MembershipConfiguration/canary``).
///
/// The first four are caught by the scripted adversary scenarios
/// (Tests/CarillonMembershipTests/AdversaryTests.swift); the rest by the
/// membership swarm (`carillon-sim --membership --swarm --canary NAME`,
/// docs/testing.md).
@_spi(Canary) public enum MembershipCanary: String, Sendable, CaseIterable {
    /// Runs are not told apart: membership frames naming another run are taken,
    /// the simulated shell's tag check ignores the run, the first view's
    /// incarnations are the same in every run, and a decision is adopted
    /// without a promise or below what was delivered.
    case runsNotTold = "runs-not-told"
    /// A member proposes without hearing a majority, and counts as failing
    /// only members it does not hear itself (a deaf member stops everyone).
    case deafMayPropose = "deaf-may-propose"
    /// Join requests of an incarnation already seen in a view are taken again.
    case staleJoinsTaken = "stale-joins-taken"
    /// A restart given the first view's configuration reuses it and its incarnation.
    case restartReusesFirstView = "restart-reuses-first-view"
    /// A decided view is installed as soon as the decision is known, without
    /// waiting until the old view is delivered up to the cut: the old view's
    /// late deliveries land in the new view (virtual synchrony, agreement).
    case installBeforeCutHeld = "install-before-cut-held"
    /// The old view is ended at this member's own received positions instead
    /// of the agreed ragged cut: members deliver different sets of messages in
    /// the view they leave together (virtual synchrony).
    case skipRaggedTrim = "skip-ragged-trim"
    /// Half of the view counts as a majority: the two sides of an even
    /// split (or the smaller side of an odd one, one short) each decide a
    /// next view of their own (single primary).
    case halfIsMajority = "half-is-majority"
}
