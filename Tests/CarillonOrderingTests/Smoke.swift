import Testing
@testable import CarillonOrdering
